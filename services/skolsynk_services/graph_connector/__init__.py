"""The Microsoft 365 / School Data Sync connector: reads Graph Education (schools, users, classes with
members and teachers) with delta queries and publishes source runs to the normaliser."""
