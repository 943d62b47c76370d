"""Placeholder router, filled in by the insights API."""

from fastapi import APIRouter

router = APIRouter()
