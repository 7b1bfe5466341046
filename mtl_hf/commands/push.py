"""`mtl-hf push MODEL REPO_ID`: a saved model folder, with its card, to the Hub in one commit."""

from __future__ import annotations

import argparse

SUMMARY = "upload a saved model folder (with its card) to the Hub"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="the saved model folder")
    parser.add_argument("repo_id", help="the Hub repository, e.g. my-shop/product-tagger")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--revision", help="the branch to push to (default: main)")
    parser.add_argument("--commit_message", default="Upload multi-task model with mtl_hf", help="the commit message")
    parser.add_argument("--token", help="a Hub token with write access (default: the logged-in token / HF_TOKEN)")


def run(args: argparse.Namespace) -> int:
    from ..hub.push import push_folder

    url, commit = push_folder(
        args.model,
        args.repo_id,
        private=args.private,
        revision=args.revision,
        commit_message=args.commit_message,
        token=args.token,
    )
    print(f"pushed {args.model} to {url} ({commit.oid[:10] if commit.oid else 'no change'})")
    return 0


__all__ = ["SUMMARY", "add_arguments", "run"]
