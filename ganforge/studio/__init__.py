"""ganforge studio: explore trained generators in the browser (pip install 'ganforge[studio]').

The app lives in `ganforge.studio.app` (it needs FastAPI and uvicorn); `ganforge studio` starts it.
"""
