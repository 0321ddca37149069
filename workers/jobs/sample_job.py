"""`/retrain sample` on a train worker (it needs torch): the profile's best checkpoint, read and verified by
workers/session/best.py as export and publishing read it, writes a bounded number of tokens after the
commenter's prompt, and the reply shows both (app/writing/replies.py `sample`).

The seed is the comment's id: asking again with another comment gives other text, while a redelivered task
writes the same reply. The prompt keeps only its last block_size tokens (the model sees no more); its length
was bounded when the command was parsed.
"""

from __future__ import annotations

import asyncio
import logging

from app.config.settings import Settings
from app.errors import SessionError
from app.features.decisions import Origin
from app.github.auth import EVENTS_PERMISSIONS, TokenCache
from app.github.client import installation_client
from app.writing import replies
from workers.session.best import BestModel, load_best
from workers.session.repos import GitHubRepository
from workers.session.store import CheckpointStore
from workers.trainer.data import bits_per_byte
from workers.trainer.device import resolve_device
from workers.trainer.sample import SampleSettings, sample_text

log = logging.getLogger(__name__)
DEFAULT_PROMPT = "\n"


def write_sample(best: BestModel, prompt: str, sampling: SampleSettings, device: str = "auto") -> tuple[str, int]:
    """(text after the prompt, tokens generated); bytes that are not UTF-8 show as U+FFFD."""
    return sample_text(best.model_config, best.payload, best.tokenizer, (prompt or DEFAULT_PROMPT).encode(),
                       sampling, resolve_device(device))


async def run_sample(settings: Settings, origin: Origin, profile: str, prompt: str, *,
                     tokens: TokenCache | None = None) -> str:
    """The outcome in a few words; the requester always gets a reply, with the text or with why not."""
    async with installation_client(
        settings, origin.installation_id, repo=origin.repo, permissions=EVENTS_PERMISSIONS, tokens=tokens
    ) as gh:
        if origin.issue_number is None:
            return "ignored: a sample replies to a comment, and there is none"
        try:
            best = await load_best(GitHubRepository(gh, origin.repo), CheckpointStore(settings.store_url),
                                   store_prefix=origin.repo, profile=profile, branch=origin.ref)
        except SessionError as exc:
            await gh.create_comment(origin.repo, origin.issue_number, replies.no_checkpoint(origin, str(exc)))
            return f"no checkpoint: {exc}"
        sampling = SampleSettings(max_new_tokens=settings.sample_tokens, seed=origin.comment_id or 1337)
        try:
            text, made = await asyncio.to_thread(write_sample, best, prompt, sampling)
        except (ValueError, RuntimeError) as exc:  # a checkpoint that loads but does not run (shape, device)
            log.warning("sampling %s of %s failed", best.entry.checkpoint_id, origin.repo, exc_info=True)
            await gh.create_comment(origin.repo, origin.issue_number, replies.sample_failed(
                origin, f"`{best.entry.checkpoint_id}` did not run ({type(exc).__name__}); the operators have the "
                        "details in the worker's log"))
            return f"failed: {type(exc).__name__}"
        entry = best.entry
        body = replies.sample(
            origin, prompt=prompt, text=text, checkpoint=entry.checkpoint_id, profile=profile,
            iteration=entry.iteration, tokens=made,
            val_bpb=bits_per_byte(entry.val_loss) if entry.val_loss is not None else None,
        )
        await gh.create_comment(origin.repo, origin.issue_number, body)
        return f"sampled {made} tokens from {entry.checkpoint_id}"
