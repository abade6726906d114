"""Who reaches which records: the access rules in app/access/rules.py."""
