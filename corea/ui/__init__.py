"""The web app's tabs: widget-free handlers (tests call them directly) and the Gradio layout of
each tab. ``app.py`` assembles them."""
