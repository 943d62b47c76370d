"""Placeholder router, filled in by the durations API."""

from fastapi import APIRouter

router = APIRouter()
