"""leadflow's HTTP surface (FastAPI): what lead sources and buyers call."""
