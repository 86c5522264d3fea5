"""Serving: score raw records (batch files, HTTP), ONNX export, A/B arms."""
