#!/usr/bin/env python3
"""Export torchvision's backbone weights to a .safetensors file Pastiche can load.

    python scripts/export_weights.py --model vgg19 --out vgg19.safetensors
    python scripts/export_weights.py --model googlenet --random --seed 1 --out g.safetensors
    python scripts/export_weights.py --model inception_v3 --out inception_v3.safetensors

Pretrained weights are downloaded by torchvision (once, into its cache), so this
needs network access and a full `pip install torch torchvision`; Pastiche itself
never downloads anything. The state-dict names are kept unchanged; the classifier
(which style transfer never uses) is left out, unless --keep-classifier; so are
GoogLeNet's and Inception v3's auxiliary classifiers.
"""

import argparse
import sys

import torch
import torchvision
from safetensors.torch import save_file

MODELS = ("vgg16", "vgg19", "googlenet", "inception_v3")
# Models whose inputs torchvision can re-normalise (`transform_input`).
INCEPTIONS = ("googlenet", "inception_v3")
CLASSIFIER_PREFIXES = ("classifier.", "fc.", "aux1.", "aux2.", "AuxLogits.")


def build_model(name, pretrained, transform_input=None):
    """torchvision's model without auxiliary classifiers; GoogLeNet's and Inception
    v3's transform_input default as torchvision's (on when pretrained). Random
    Inception v3 weights are torchvision's init_weights (truncated normal)."""
    ctor = getattr(torchvision.models, name)
    if name in INCEPTIONS:
        kwargs = {"aux_logits": False, "init_weights": not pretrained}
        if transform_input is not None:
            kwargs["transform_input"] = transform_input
        model = ctor(weights="DEFAULT" if pretrained else None, **kwargs)
    else:
        model = ctor(weights="DEFAULT" if pretrained else None)
    return model.eval()


def metadata_for(name, model, source):
    return {
        "backbone": name,
        "transform_input": "true" if getattr(model, "transform_input", False) else "false",
        "source": source,
        "torchvision": torchvision.__version__,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, choices=MODELS)
    parser.add_argument("--out", required=True)
    parser.add_argument("--random", action="store_true", help="seeded random weights (torchvision's init) instead of pretrained")
    parser.add_argument("--seed", type=int, default=0, help="seed for --random")
    parser.add_argument("--init", choices=("torchvision", "kaiming"), default="torchvision",
                        help="for --random: torchvision's init, or every convolution drawn as Pastiche draws "
                        "its random networks' (kaiming_normal_, fan_out), which keeps the inception "
                        "networks' activations at a usable scale")
    parser.add_argument("--transform-input", choices=("true", "false"), help="googlenet and inception_v3 only; default: as torchvision (true when pretrained)")
    parser.add_argument("--keep-classifier", action="store_true")
    args = parser.parse_args(argv)

    transform_input = None if args.transform_input is None else args.transform_input == "true"
    if args.random:
        torch.manual_seed(args.seed)
        source = f"torchvision {args.model}, random init, seed {args.seed}"
    else:
        source = f"torchvision {args.model}, pretrained (DEFAULT weights)"
    try:
        model = build_model(args.model, pretrained=not args.random, transform_input=transform_input)
    except Exception as err:  # a download failure reads better than a traceback
        sys.exit(f"cannot build {args.model}: {err}")
    if args.random and args.init == "kaiming":
        source += ", convolutions kaiming_normal_ (fan_out)"
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    state = {
        key: value.detach().contiguous()
        for key, value in model.state_dict().items()
        if args.keep_classifier or not key.startswith(CLASSIFIER_PREFIXES)
    }
    save_file(state, args.out, metadata=metadata_for(args.model, model, source))
    print(f"wrote {len(state)} tensors to {args.out} ({source})")


if __name__ == "__main__":
    main()
