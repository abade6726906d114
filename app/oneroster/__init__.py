"""OneRoster 1.2 (1EdTech): client credentials (clients.py, oauth.py), the rostering and gradebook REST
bindings (rostering.py, gradebook.py) over the school's own records, with the binding's query grammar
(query.py) and error shape (errors.py). docs/ONEROSTER.md describes it for a district."""
