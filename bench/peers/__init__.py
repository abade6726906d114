"""Peer frameworks serving GET one student by id from the benchmark's database (`make bench`):
Django REST Framework (drfapp) and FastAPI (fastapi_app). Their packages: bench/requirements.txt."""
