"""The EGIL SCIM receiver: organisers' EGIL clients push SS 12000:2018 data here."""
