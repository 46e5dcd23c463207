"""Example applications for fastapi-streamhub."""
