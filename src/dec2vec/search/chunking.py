"""Token-aware splitting of long documents into overlapping chunks that map back to their document."""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase


def chunk_text(
    tokenizer: PreTrainedTokenizerBase, text: str, max_tokens: int = 256, overlap: int = 32
) -> list[str]:
    """Pieces of ``text`` of at most ``max_tokens`` tokens, each sharing ``overlap`` tokens with the last.

    Cut on token boundaries (character offsets of one tokenization), so no word is split mid-token and
    every character of the text is in some chunk. A text that fits is returned whole.
    """
    if not 0 <= overlap < max_tokens:
        raise ValueError(f"overlap ({overlap}) must be at least 0 and below max_tokens ({max_tokens})")
    # verbose=False: a long text is the point here, not a reason to warn about the model's max length
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)[
        "offset_mapping"
    ]
    if len(offsets) <= max_tokens:
        return [text]  # a blank text stays one (empty) chunk: its document's title carries it
    chunks = []
    step = max_tokens - overlap
    for start in range(0, len(offsets), step):
        end = min(start + max_tokens, len(offsets))
        # From the start of this window's first token to the start of the next window's first token, so
        # the text between tokens (spaces) stays with the chunk it precedes.
        begin = 0 if start == 0 else offsets[start][0]
        stop = len(text) if end == len(offsets) else offsets[end][0]
        chunks.append(text[begin:stop])
        if end == len(offsets):
            break
    return chunks
