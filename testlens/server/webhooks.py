"""Placeholder router, filled in by the webhooks API."""

from fastapi import APIRouter

router = APIRouter()
