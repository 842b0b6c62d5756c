"""Model preparation: pinned sources -> ONNX files (`prepare.prepare_models`), our TF.js -> ONNX converter,
and the fire-model export that runs in its own process (torch and ultralytics stay out of the runtime one)."""
