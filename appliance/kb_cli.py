"""`appliance kb list|search`: what the local knowledge base holds and what a turn would retrieve."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

KB_HELP = "inspect the local knowledge base (conversation_config.agent.prompt.knowledge_base)"


def add_kb_parser(sub: Any) -> None:
    from appliance.cli import config_after_action

    kb = sub.add_parser("kb", help=KB_HELP)
    kb.add_argument("--config", "-c", metavar="FILE", help="YAML configuration (default: embedded default)")
    kb.add_argument("--cache-dir", metavar="DIR", help="index cache folder (default: <state dir>/knowledge)")
    ksub = kb.add_subparsers(dest="kb_command", metavar="ACTION")
    config_after_action(ksub.add_parser("list", help="documents, chunks and index state"))
    search = ksub.add_parser("search", help="what a user turn with this question would retrieve, with scores")
    config_after_action(search)
    search.add_argument("question")
    search.add_argument("--json", action="store_true", help="the knowledge_retrieved event fields as JSON")


def cmd_kb(args: argparse.Namespace) -> int:
    from appliance.config import load_config
    from appliance.runtime.knowledge_base import knowledge_for

    if args.kb_command not in ("list", "search"):
        print("usage: appliance kb {list,search QUESTION} [-c FILE]")
        return 2
    config = load_config(args.config, log_warnings=False)
    index = knowledge_for(config, Path(args.cache_dir) if args.cache_dir else None)
    if index is None:
        print("no knowledge base: no conversation_config.agent.prompt.knowledge_base entry has a local path")
        return 0
    if args.kb_command == "list":
        where = f" ({index.cache_file})" if index.cache_file else ""
        rag = index.rag
        print(
            f"index: {index.cache_state}{where}; {len(index.chunks)} chunks; rag "
            f"{'enabled' if rag.enabled else 'disabled'}, up to {rag.max_retrieved_rag_chunks_count} chunks "
            f"and {index.context_chars or rag.max_documents_length:,} characters per turn"
        )
        for doc in index.documents:
            n = sum(1 for c in index.chunks if c.document_id == doc.document_id)
            extra = f", {len(doc.faq)} FAQ entries (threshold {doc.faq_threshold})" if doc.faq else ""
            print(
                f"  {doc.document_id}  [{doc.usage_mode}]  {doc.path}  {len(doc.text):,} characters, "
                f"{n} chunks{extra}"
            )
        return 0
    found = index.retrieve(args.question)
    if args.json:
        print(json.dumps(found.event_fields()))
        return 0
    if found.faq is not None:
        used = "used: spoken as written" if found.faq_answer is not None else "below the threshold"
        print(
            f"FAQ best match {found.faq.score:.2f} ({used}): {found.faq.question!r} in {found.faq_document}"
        )
        if found.faq_answer is not None:
            print(f"  answer: {found.faq_answer}")
    for hit in found.hits:
        text = " ".join(hit.chunk.text.split())
        print(f"{hit.score:7.3f}  {hit.chunk.chunk_id}  {text[:160]}{'...' if len(text) > 160 else ''}")
    if found.faq_answer is None and not found.hits:
        print("nothing retrieved (no shared word with any chunk)")
    print(f"({found.ms:.2f} ms)")
    return 0
