"""The naive baseline that `bench/serving.py` compares against: the tutorial design users start from.

A Flask app, one image per request, eager PyTorch, no batching: `POST /predict` (multipart `image`) →
the top-5 classes, `GET /health`. Same registered weights as the BentoML service.

    python bench/baseline_server.py MODEL_REF --port 5000 [--device cuda]
"""

from __future__ import annotations

import argparse
import io

import torch
from flask import Flask, jsonify, request
from PIL import Image
from torchvision import transforms

from lightyard.registry import load


def create_app(ref: str, device: str = "cpu") -> Flask:
    model = load(ref)
    net = model.net().eval().to(device)
    spec = model.spec
    labels = model.class_names()
    transform = transforms.Compose(
        [
            transforms.Resize((spec.height, spec.width)),
            transforms.Grayscale()
            if spec.channels == 1
            else transforms.Lambda(lambda image: image.convert("RGB")),
            transforms.ToTensor(),
            transforms.Normalize(spec.mean, spec.std),
        ]
    )
    app = Flask(__name__)

    @app.post("/predict")
    def predict():
        image = Image.open(io.BytesIO(request.files["image"].read()))
        with torch.no_grad():
            probabilities = torch.softmax(net(transform(image)[None].to(device)), dim=1)[0].cpu()
        top = torch.topk(probabilities, 5)
        predictions = [
            {"class": int(i), "label": labels[i], "probability": float(p)}
            for p, i in zip(top.values, top.indices, strict=True)
        ]
        return jsonify({"predictions": predictions, "model": model.tag})

    @app.get("/health")
    def health():
        return jsonify({"status": "healthy", "model": model.tag})

    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    create_app(args.model, args.device).run(host="127.0.0.1", port=args.port, threaded=True)
