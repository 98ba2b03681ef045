"""Demo data: realistic simulated recordings written in real file formats."""
