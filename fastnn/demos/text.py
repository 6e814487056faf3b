"""Classify generated "sentences" with Embedding → bidirectional LSTM → Linear, then export to ONNX.

Each sentence is a sequence of token ids from a vocabulary of 32: positive
words, negative words, neutral words and the word "not", which flips the
polarity of the word after it. A sentence is positive when its positive
words outnumber its negative ones (after the flips; ties are not generated).
Order matters, so a bag of words cannot solve it: the model reads the
sentence with a bidirectional LSTM and classifies the last time step.

After training the model is written as an ONNX graph and run by
onnxruntime on the test sentences: its predictions must be fastnn's.
"""

from __future__ import annotations

import os

import numpy as np

from . import add_training_arguments, fit_classifier

NAME = "text"
HELP = "Embedding -> bidirectional LSTM -> Linear on generated sentences, exported to ONNX and run in onnxruntime"

REQUIRES = {"onnx": "onnx", "onnxruntime": "onnxruntime"}

VOCAB = 32
NOT = 1  # "not": flips the next word's polarity
POSITIVE = range(2, 10)
NEGATIVE = range(10, 18)  # 18..31 neutral; 0 padding (unused here)


def add_arguments(parser) -> None:
    add_training_arguments(parser, epochs=8, lr=0.01, optimizer="Adam")
    parser.add_argument("--train", type=int, default=3000, help="training sentences (default 3000)")
    parser.add_argument("--length", type=int, default=16, help="words per sentence (default 16)")
    parser.add_argument("--hidden", type=int, default=32, help="LSTM units per direction (default 32)")
    parser.add_argument("--out", default=".", help="folder for text.onnx (default: current folder)")
    parser.add_argument("--no-onnx", action="store_true", help="skip the ONNX export and the onnxruntime check")


def make_data(n, length, rng):
    """``n`` sentences (int64 token ids, (n, length)) and their labels (1 positive, 0 negative)."""
    X = np.empty((0, length), np.int64)
    y = np.empty(0, np.int64)
    while X.shape[0] < n:
        words = rng.integers(2, VOCAB, (2 * n, length))
        negate = rng.random((2 * n, length)) < 0.15
        words[negate] = NOT
        polarity = np.where(np.isin(words, POSITIVE), 1, np.where(np.isin(words, NEGATIVE), -1, 0))
        flipped = np.zeros_like(polarity)
        flipped[:, 1:] = words[:, :-1] == NOT  # the word after a "not"
        score = (polarity * np.where(flipped == 1, -1, 1)).sum(axis=1)
        keep = score != 0
        X = np.concatenate([X, words[keep]])
        y = np.concatenate([y, (score[keep] > 0).astype(np.int64)])
    return X[:n], y[:n]


def build_model(hidden, embedding=16):
    from fastnn import nn

    return nn.Sequential(
        nn.Embedding(VOCAB, embedding),
        nn.LSTM(embedding, hidden, batch_first=True, bidirectional=True),
        nn.LastTimeStep(batch_first=True),
        nn.Linear(2 * hidden, 2),
    )


def train(args, log=print):
    """Train, evaluate and (unless ``args.no_onnx``) export and check; returns a dict of results."""
    import fastnn
    from fastnn import optim

    rng = np.random.default_rng(args.seed)
    X, y = make_data(args.train + 1000, args.length, rng)
    X_train, y_train, X_test, y_test = X[: args.train], y[: args.train], X[args.train :], y[args.train :]
    fastnn.manual_seed(args.seed)
    model = build_model(args.hidden)
    log(
        f"text demo: Embedding({VOCAB}, 16) -> biLSTM({args.hidden}) -> Linear, {args.train} sentences of "
        f"{args.length} words, backend={fastnn.get_backend()}"
    )
    history, seconds = fit_classifier(
        model,
        optim.Adam(model.parameters(), lr=args.lr),
        X_train,
        y_train,
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        progress=not args.no_progress,
    )
    model.eval()
    logits = fastnn.predict(model, X_test)
    accuracy = float(np.mean(logits.argmax(axis=1) == y_test))
    log(f"trained in {seconds:.1f} s; test accuracy {accuracy:.3f} (final training loss {history['loss'][-1]:.4f})")
    result = {"seconds": seconds, "accuracy": accuracy, "history": history}
    if not args.no_onnx:
        import onnxruntime as ort

        os.makedirs(args.out, exist_ok=True)
        path = fastnn.export_onnx(model, os.path.join(args.out, "text.onnx"), X_test.shape)
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        onnx_logits = sess.run(None, {"input": X_test})[0]
        agree = float(np.mean(onnx_logits.argmax(axis=1) == logits.argmax(axis=1)))
        diff = float(np.max(np.abs(onnx_logits - logits)))
        log(
            f"wrote {path}; onnxruntime: predictions agree on {agree:.1%} of the test set, largest difference {diff:.1e}"
        )
        result.update(onnx_path=path, onnx_agreement=agree, onnx_max_diff=diff)
    return result


def run(args) -> int:
    result = train(args)
    if not args.no_onnx and result["onnx_agreement"] < 1.0:
        return 1
    return 0
