from flask import Blueprint

bp = Blueprint("grading", __name__)
