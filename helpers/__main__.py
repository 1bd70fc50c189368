"""``python -m helpers demo --model tiny``: serve the Gradio demo on 127.0.0.1."""

from .demo import main

main()
