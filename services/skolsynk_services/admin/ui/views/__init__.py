"""The UI's page handlers, one module per page group (the tenant navigation's sections, sign-in and the
operators' start page); ``ui.routes`` gives each its URL."""
