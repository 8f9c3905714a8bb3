"""The prediction service against a FastAPI/uvicorn baseline, under wrk: python -m bench.serve."""
