"""A document: its text, tokens and segments, updated edit by edit.

This is the engine's unit of state that the daemon keeps per open file. Applying a text edit
reports both the token edit and which segments it touched, so that only those segments' model
states need work.
"""

from dataclasses import dataclass

from vqedit.text.edit import Edit

from .segments import Segment, SegmentEdit, cut_segments, diff_segments
from .tokens import TokenEdit, TokenizedText, Tokenizer, Tokens


@dataclass(frozen=True)
class DocumentEdit:
    tokens: TokenEdit
    segments: SegmentEdit


class Document:
    def __init__(self, tokenizer: Tokenizer, text: str, max_positions: int) -> None:
        self.tokenizer = tokenizer
        # The window counts the special tokens the model wraps each segment in.
        self.window = max_positions - len(tokenizer.prefix) - len(tokenizer.suffix)
        self.tokenized = TokenizedText(tokenizer, text)
        self.segments = cut_segments(self.tokens, text, self.window)

    @property
    def text(self) -> str:
        return self.tokenized.text

    @property
    def tokens(self) -> Tokens:
        return self.tokenized.tokens

    def apply(self, edit: Edit) -> DocumentEdit:
        token_edit = self.tokenized.apply(edit)
        old, self.segments = self.segments, cut_segments(self.tokens, self.text, self.window)
        return DocumentEdit(token_edit, diff_segments(old, self.segments, token_edit))

    def model_input(self, segment: Segment) -> list[int]:
        """Token ids of a segment wrapped in the model's special tokens."""
        return self.tokenizer.wrap(self.tokens.ids[segment.start:segment.end])
