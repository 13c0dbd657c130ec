#!/usr/bin/env python3
"""PyTorch/torchvision references that Pastiche's tests and benchmarks compare against.

Run with the reference environment that `scripts/setup.sh --test` installs
(.deps/reference/bin/python). Inputs and outputs are .safetensors files, so that
both sides see bit-identical tensors. Subcommands:

  features  torchvision feature maps at named layers
  save-state-dict  a state dict saved by torch.save (zip or legacy format), and
            what torch.load reads back from it
  optim     a torch.optim trajectory on the Rosenbrock function
  losses    Gram matrices and the Gatys losses computed directly
  gatys     the whole style-transfer optimisation, as the PyTorch tutorial writes
            it (also timed by the benchmark); `--precision bf16` runs the backbone
            under torch.autocast(bfloat16) and its features back in fp32
"""

import argparse
import json
import os
import resource
import sys
import time

import torch
import torchvision
from safetensors import safe_open
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export_weights import INCEPTIONS, build_model  # noqa: E402

VGG_BLOCKS = {"vgg16": [2, 2, 3, 3, 3], "vgg19": [2, 2, 4, 4, 4]}
GOOGLENET_LAYERS = [
    "conv1", "maxpool1", "conv2", "conv3", "maxpool2", "inception3a", "inception3b",
    "maxpool3", "inception4a", "inception4b", "inception4c", "inception4d",
    "inception4e", "maxpool4", "inception5a", "inception5b",
]
INCEPTION_V3_LAYERS = [
    "Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1",
    "Conv2d_4a_3x3", "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a",
    "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c",
]
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
# Caffe's and Keras's VGG inputs: BGR in [0, 255] minus this mean pixel (BGR order).
CAFFE_MEAN_BGR = torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)


def preprocess(image, convention):
    """An RGB image in [0, 1] as a network trained with `convention` expects it."""
    if convention == "caffe":
        return image.flip(1) * 255 - CAFFE_MEAN_BGR
    return (image - MEAN) / STD


def layer_names(model):
    if model == "googlenet":
        return GOOGLENET_LAYERS
    if model == "inception_v3":
        return INCEPTION_V3_LAYERS
    names = []
    for block, convs in enumerate(VGG_BLOCKS[model], start=1):
        for i in range(1, convs + 1):
            names += [f"conv{block}_{i}", f"relu{block}_{i}"]
        names.append(f"pool{block}")
    return names


def load_model(name, weights):
    """torchvision's model with the weights of a Pastiche .safetensors file."""
    with safe_open(weights, "pt") as f:
        meta = f.metadata() or {}
    transform_input = meta.get("transform_input", "false") == "true"
    model = build_model(name, pretrained=False, transform_input=transform_input if name in INCEPTIONS else None)
    missing, unexpected = model.load_state_dict(load_file(weights), strict=False)
    missing = [k for k in missing if not k.startswith(("classifier.", "fc.", "aux"))]
    if missing or unexpected:
        raise SystemExit(f"weights do not fit {name}: missing {missing}, unexpected {unexpected}")
    return model.eval().requires_grad_(False)


class Extractor:
    """Runs a torchvision backbone layer by layer up to the deepest wanted layer."""

    def __init__(self, name, model, channels_last=False, bf16=False):
        self.names = layer_names(name)
        self.channels_last = channels_last
        self.bf16 = bf16
        if name in INCEPTIONS:
            self.modules = [getattr(model, n) for n in self.names]
            self.prelude = model._transform_input
        else:
            self.modules = list(model.features.children())
            self.prelude = lambda x: x
        # VGG's ReLUs are in place: a kept conv output must be copied to survive them.
        self.copy = [name not in INCEPTIONS and n.startswith("conv") for n in self.names]

    def __call__(self, x, wanted):
        if not self.bf16:
            return self.forward(x, wanted)
        # PyTorch's mixed precision: the convolutions in bfloat16 (autocast casts
        # their inputs and weights), the Gram matrices and losses in fp32.
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            features = self.forward(x, wanted)
        return [f.float() for f in features]

    def forward(self, x, wanted):
        indices = [self.names.index(w) for w in wanted]
        deepest = max(indices)
        x = self.prelude(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        kept = {}
        for i, module in enumerate(self.modules[: deepest + 1]):
            x = module(x)
            if i in indices:
                kept[i] = x.clone() if self.copy[i] else x
        return [kept[i] for i in indices]


def gram(features):
    a, b, c, d = features.size()
    flat = features.view(a * b, c * d)
    return torch.mm(flat, flat.t()).div(a * b * c * d)


def total_variation(x):
    return ((x[:, :, 1:, :] - x[:, :, :-1, :]) ** 2).mean() + ((x[:, :, :, 1:] - x[:, :, :, :-1]) ** 2).mean()


def cmd_features(args):
    model = load_model(args.model, args.weights)
    x = load_file(args.input)["input"]
    if args.convention:
        x = preprocess(x, args.convention)
    layers = args.layers.split(",")
    with torch.no_grad():
        outs = Extractor(args.model, model)(x, layers)
    save_file({name: out.contiguous() for name, out in zip(layers, outs)}, args.out)


def cmd_save_state_dict(args):
    # A random torchvision model's state dict (an OrderedDict with `_metadata`),
    # without the classifier, plus two views the reader must follow: strides and an
    # offset into a storage shared with other data. With --whole, all of it, as
    # torchvision's pretrained files are.
    torch.manual_seed(args.seed)
    if args.whole:
        model = getattr(torchvision.models, args.model)(weights=None, init_weights=True)
        torch.save(model.state_dict(), args.out)
        loaded = torch.load(args.out)
        save_file({k: v.contiguous() for k, v in loaded.items()}, args.reference)
        return
    state = build_model(args.model, pretrained=False).state_dict()
    for key in [k for k in state if not k.startswith("features.")]:
        del state[key]
    state["features.0.weight"] = torch.randn(3, 64, 3, 3).transpose(0, 1)
    state["features.2.bias"] = torch.randn(200)[10:74]
    if args.misshape:
        state[args.misshape] = torch.zeros(1)
    torch.save(state, args.out, _use_new_zipfile_serialization=not args.legacy)
    loaded = torch.load(args.out)
    save_file({k: v.contiguous() for k, v in loaded.items()}, args.reference)


def rosenbrock(x):
    return (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()


def cmd_optim(args):
    x0 = load_file(args.problem)["x0"]
    x = x0.clone().requires_grad_(True)
    if args.optimizer == "lbfgs":
        opt = torch.optim.LBFGS(
            [x], lr=args.lr, max_iter=args.max_iter, max_eval=args.max_eval,
            history_size=args.history_size,
            line_search_fn=None if args.line_search == "none" else args.line_search,
        )
    else:
        opt = torch.optim.Adam([x], lr=args.lr)

    def closure():
        opt.zero_grad()
        loss = rosenbrock(x)
        loss.backward()
        return loss

    xs, losses = [x.detach().clone()], []
    for _ in range(args.steps):
        losses.append(float(opt.step(closure)))
        xs.append(x.detach().clone())
    save_file({"x": torch.stack(xs), "loss": torch.tensor(losses, dtype=torch.float64)}, args.out)


def cmd_perturb_bn(args):
    """Random batch-norm statistics, so that a test sees batch norm do something."""
    with safe_open(args.weights, "pt") as f:
        meta = f.metadata() or {}
    state = load_file(args.weights)
    gen = torch.Generator().manual_seed(args.seed)
    for key, value in state.items():
        if ".bn." not in key or not value.is_floating_point():
            continue
        noise = torch.rand(value.shape, generator=gen)
        if key.endswith("running_var") or key.endswith(".weight"):
            state[key] = 0.5 + noise
        else:
            state[key] = noise - 0.5
    save_file(state, args.out, metadata=meta)


def cmd_losses(args):
    t = load_file(args.input)
    out = {
        "gram": gram(t["features"]),
        "content": torch.nn.functional.mse_loss(t["features"], t["target"]),
        "style": torch.nn.functional.mse_loss(gram(t["features"]), gram(t["target"])),
        "tv": total_variation(t["image"]),
    }
    save_file({k: v.contiguous() for k, v in out.items()}, args.out)


class GatysLoss:
    """styles: [(image, blend weight)]; each style layer's target is the weighted sum of their Grams."""

    def __init__(self, extractor, content_layers, style_layers, content, styles, alpha, beta, gamma):
        self.extractor = extractor
        self.content_layers = content_layers
        self.style_layers = [(l.split(":")[0], float(l.split(":")[1]) if ":" in l else 1.0) for l in style_layers]
        self.layers = content_layers + [n for n, _ in self.style_layers]
        self.alpha, self.beta, self.gamma = alpha, beta, gamma
        with torch.no_grad():
            c = self.extractor((content - MEAN) / STD, self.layers)
            self.content_targets = [f.detach() for f in c[: len(content_layers)]]
            self.style_targets = [0] * len(self.style_layers)
            for style, weight in styles:
                s = self.extractor((style - MEAN) / STD, self.layers)
                for i, f in enumerate(s[len(content_layers):]):
                    self.style_targets[i] = self.style_targets[i] + weight * gram(f).detach()

    def balance(self, content, styles, ratio):
        """style_weight = "auto:ratio": ratio * alpha L_c(styles, each resized to the content) / L_s(content)."""
        beta, self.beta = self.beta, 1.0
        with torch.no_grad():
            style_at_content = float(self.terms(content)[1])
            size = content.shape[2:]
            content_at_style = sum(
                w * float(self.terms(torch.nn.functional.interpolate(s, size=size, mode="bilinear", align_corners=False))[0])
                for s, w in styles
            )
        self.beta = beta
        return ratio * content_at_style / style_at_content

    def terms(self, x):
        feats = self.extractor((x - MEAN) / STD, self.layers)
        n = len(self.content_layers)
        content = sum(torch.nn.functional.mse_loss(f, t) for f, t in zip(feats[:n], self.content_targets))
        style = sum(
            w * torch.nn.functional.mse_loss(gram(f), t)
            for f, t, (_, w) in zip(feats[n:], self.style_targets, self.style_layers)
        )
        tv = total_variation(x) if self.gamma else torch.zeros(())
        content, style, tv = self.alpha * content, self.beta * style, self.gamma * tv
        return content, style, tv, content + style + tv


def cmd_gatys(args):
    global MEAN, STD
    torch.set_num_threads(args.threads or torch.get_num_threads())
    device = torch.device(args.device)
    MEAN, STD = MEAN.to(device), STD.to(device)
    model = load_model(args.model, args.weights).to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    images = {k: v.to(device) for k, v in load_file(args.images).items()}
    if args.style_blend:
        blend = [float(w) for w in args.style_blend.split(",")]
        styles = [(images[f"style{i}"], w) for i, w in enumerate(blend)]
    else:
        styles = [(images["style"], 1.0)]
    auto = args.style_weight.startswith("auto")
    loss = GatysLoss(
        Extractor(args.model, model, args.channels_last, args.precision == "bf16"), args.content_layers.split(","), args.style_layers.split(","),
        images["content"], styles, args.content_weight, 1.0 if auto else float(args.style_weight), args.tv_weight,
    )
    if auto:
        ratio = float(args.style_weight.split(":")[1]) if ":" in args.style_weight else 1.0
        loss.beta = loss.balance(images["content"], styles, ratio)
    x = images["init"].clone().requires_grad_(True)
    if args.optimizer == "lbfgs":
        opt = torch.optim.LBFGS(
            [x], lr=args.lr, max_iter=1, max_eval=26, history_size=args.history_size,
            line_search_fn=None if args.line_search == "none" else args.line_search,
        )
    else:
        opt = torch.optim.Adam([x], lr=args.lr)

    rows, stamps = [], [time.perf_counter()]
    for iteration in range(args.iterations):
        first = []

        def closure():
            opt.zero_grad()
            terms = loss.terms(x)
            terms[3].backward()
            if not first:
                first.append([float(t) for t in terms])
            return terms[3]

        opt.step(closure)
        with torch.no_grad():
            x.clamp_(0, 1)
        rows.append([iteration] + first[0])
        stamps.append(time.perf_counter())  # float() above waited for the device
    with torch.no_grad():
        rows.append([args.iterations] + [float(t) for t in loss.terms(x)])
    save_file({
        "losses": torch.tensor(rows, dtype=torch.float64),
        "image": x.detach().cpu().contiguous(),
        "beta": torch.tensor(loss.beta, dtype=torch.float64),
    }, args.out)
    if args.report:
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        times = [b - a for a, b in zip(stamps, stamps[1:])]
        print(json.dumps({
            "iteration_seconds": times,
            "peak_rss_bytes": peak_kib * 1024,
            "threads": torch.get_num_threads(),
            "final_total": rows[-1][4],
        }))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("features")
    p.add_argument("--model", required=True)
    p.add_argument("--weights", required=True)
    p.add_argument("--input", required=True)
    p.add_argument("--layers", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--convention", choices=("torchvision", "caffe"),
                   help="--input is an RGB image in [0, 1], to preprocess as this says (default: already preprocessed)")

    p = sub.add_parser("save-state-dict")
    p.add_argument("--model", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--legacy", action="store_true", help="torch.save(..., _use_new_zipfile_serialization=False)")
    p.add_argument("--whole", action="store_true", help="the whole state dict: classifier, auxiliary heads, batch counts")
    p.add_argument("--misshape", help="replace this tensor with one of shape [1]")
    p.add_argument("--out", required=True)
    p.add_argument("--reference", required=True, help="where to write torch.load's tensors (.safetensors)")

    p = sub.add_parser("perturb-bn")
    p.add_argument("--weights", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)

    p = sub.add_parser("optim")
    p.add_argument("--problem", required=True)
    p.add_argument("--optimizer", choices=("lbfgs", "adam"), required=True)
    p.add_argument("--lr", type=float, default=1.0)
    p.add_argument("--max-iter", type=int, default=1)
    p.add_argument("--max-eval", type=int, default=26)
    p.add_argument("--history-size", type=int, default=100)
    p.add_argument("--line-search", default="none")
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--out", required=True)

    p = sub.add_parser("losses")
    p.add_argument("--input", required=True)
    p.add_argument("--out", required=True)

    p = sub.add_parser("gatys")
    p.add_argument("--model", required=True)
    p.add_argument("--weights", required=True)
    p.add_argument("--images", required=True, help="content, style and init tensors, [1,3,H,W] in [0,1]")
    p.add_argument("--content-layers", required=True)
    p.add_argument("--style-layers", required=True)
    p.add_argument("--content-weight", type=float, default=1.0)
    p.add_argument("--style-weight", default="1e6", help="a number, or auto / auto:RATIO")
    p.add_argument("--style-blend", help="blend weights of images style0, style1, ... (instead of 'style')")
    p.add_argument("--tv-weight", type=float, default=0.0)
    p.add_argument("--optimizer", choices=("lbfgs", "adam"), default="lbfgs")
    p.add_argument("--lr", type=float, default=1.0)
    p.add_argument("--history-size", type=int, default=100)
    p.add_argument("--line-search", default="none")
    p.add_argument("--iterations", type=int, required=True)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--report", action="store_true", help="print time per iteration and peak RSS as JSON")
    p.add_argument("--channels-last", action="store_true",
                   help="run the network in the channels-last memory format, as Pastiche does, so that "
                   "both round alike where a ReLU or max pool sits on a knife edge")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="bf16: the backbone under torch.autocast(bfloat16), the losses in fp32")
    p.add_argument("--out", required=True)

    args = parser.parse_args()
    {"features": cmd_features, "save-state-dict": cmd_save_state_dict, "perturb-bn": cmd_perturb_bn, "optim": cmd_optim, "losses": cmd_losses, "gatys": cmd_gatys}[args.cmd](args)


if __name__ == "__main__":
    main()
