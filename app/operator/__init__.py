"""The platform's operator: creates schools (each with its first admin's invitation), lists, suspends
and resumes them. An operator belongs to no school and reads no school's records; see models.py for
why operators are a table of their own."""
