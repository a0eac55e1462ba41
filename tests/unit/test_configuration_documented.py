"""Every environment variable a service reads is in the README's configuration reference."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pytest
from pydantic import AliasChoices, BaseModel
from pydantic_settings import BaseSettings

from skolsynk.settings import ServiceSettings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def env_names(settings_type: type[BaseSettings]) -> set[str]:
    prefix = settings_type.model_config.get("env_prefix", "")
    delimiter = settings_type.model_config.get("env_nested_delimiter")
    names: set[str] = set()
    for field_name, field in settings_type.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseSettings):
            names |= env_names(annotation)
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel) and delimiter:
            # A nested model (the connectors' retry settings): one variable per field of it.
            names |= {f"{prefix}{field_name}{delimiter}{sub}".upper() for sub in annotation.model_fields}
        elif isinstance(field.validation_alias, AliasChoices):
            names.add(str(field.validation_alias.choices[0]))
        else:
            names.add(f"{prefix}{field_name}".upper())
    return names


def service_settings_types() -> list[type[ServiceSettings]]:
    found: list[type[ServiceSettings]] = [ServiceSettings]
    for module_info in pkgutil.iter_modules([str(ROOT / "services" / "skolsynk_services")]):
        module = importlib.import_module(f"skolsynk_services.{module_info.name}.app")
        found += [
            value
            for value in vars(module).values()
            if isinstance(value, type) and issubclass(value, ServiceSettings) and value is not ServiceSettings
        ]
    return found


def test_every_setting_is_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    types = service_settings_types()
    assert len(types) >= 5, "the services' settings classes were not found"
    documented = {name for t in types for name in env_names(t) if f"`{name}`" in readme}
    missing = sorted({name for t in types for name in env_names(t)} - documented)
    assert missing == [], f"document these in README.md's configuration reference: {missing}"
    assert "AMQP_URL" in documented
    assert "SKOLSYNK_VENDOR_ID" in documented
