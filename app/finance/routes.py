from flask import Blueprint

bp = Blueprint("finance", __name__)
