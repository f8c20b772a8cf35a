"""Structured config of ``webdancer sft``: masked-observation supervised fine-tuning."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

SCHEDULES = ("cosine", "constant")
PACK_ATTENTION = ("position_ids", "mask4d")
DTYPES = ("float32", "bfloat16", "float16", "auto")
WANDB_MODES = ("online", "offline", "disabled")


@dataclass
class SFTConfig:
    """``webdancer sft DATA.jsonl [DATA2.jsonl ...] model=PATH_OR_NAME``.

    Defaults follow WebDancer/WebSailor's SFT (lr 5e-6, cosine, batch 32, weight decay
    0.1). An optimizer step takes ``batch_size`` conversations, split over the
    processes; each process runs its share in as many forward passes as
    ``micro_batch_tokens`` (packed) or ``micro_batch_size`` (padded) need, so gradient
    accumulation follows from these sizes. The loss is the mean token NLL over every
    assistant token of the whole step, whatever the split.
    """

    model: str = MISSING  # HF model directory or hub name
    data: list[str] = field(default_factory=list)  # JSONL files of conversations ({"messages": [...]})
    out: str = "${hydra:runtime.output_dir}"  # run directory
    lr: float = 5e-6
    weight_decay: float = 0.1
    batch_size: int = 32  # conversations per optimizer step, all processes together
    # Lay conversations end to end in rows: no padding. On CPU, pack=false with
    # micro_batch_size=1 was 1.7x faster (attention over a packed row costs its whole
    # length; see benchmarks/README.md).
    pack: bool = True
    micro_batch_tokens: int = 0  # tokens per packed forward pass; 0: max_length
    micro_batch_size: int = 4  # conversations per padded forward pass (pack=false)
    pack_attention: str = "position_ids"  # position_ids (any attention, O(T) memory) | mask4d (explicit mask)
    epochs: int = 3
    max_steps: int = 0  # 0: epochs x steps per epoch
    schedule: str = "cosine"
    warmup_steps: int = 0
    max_length: int = 32768  # tokens per conversation
    truncate: bool = False  # false: drop longer conversations (counted); true: cut them
    tool_role: bool = False  # observation turns as the template's tool role
    gradient_checkpointing: bool = False
    grad_clip: float = 1.0
    seed: int = 0
    save_every: int = 0  # steps between checkpoints; 0: only at the end
    keep_checkpoints: int = 2
    resume: bool = False  # continue from the latest checkpoint in out
    wandb_mode: str = "offline"
    wandb_project: str = "webdancer"
    dtype: str = "float32"  # weights dtype: float32 | bfloat16 | float16 | auto
    log_every: int = 1
    progress: bool = True
    threads: int = 0  # torch CPU threads; 0 leaves torch's default

    def __post_init__(self) -> None:
        for name, value, choices in (("schedule", self.schedule, SCHEDULES),
                                     ("pack_attention", self.pack_attention, PACK_ATTENTION),
                                     ("dtype", self.dtype, DTYPES), ("wandb_mode", self.wandb_mode, WANDB_MODES)):
            if value not in choices:
                raise ValueError(f"{name}={value!r} is not valid; use one of: {', '.join(choices)}.")
        if isinstance(self.data, str):
            self.data = [self.data]
        if not self.data:
            raise ValueError("no training data given; call `webdancer sft DATA.jsonl model=...` "
                             "(or data=[a.jsonl,b.jsonl]).")
        for name in ("batch_size", "micro_batch_size", "max_length", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1.")
        if self.micro_batch_tokens and self.micro_batch_tokens < self.max_length:
            raise ValueError(f"micro_batch_tokens={self.micro_batch_tokens} is below max_length={self.max_length}; "
                             "a packed row must fit the longest conversation, so raise it or set it to 0.")
        if self.epochs < 1 and self.max_steps < 1:
            raise ValueError("set epochs or max_steps to at least 1.")
        if self.lr <= 0:
            raise ValueError(f"lr={self.lr} must be positive.")

    @property
    def row_tokens(self) -> int:
        """Token budget of one packed forward pass."""
        return self.micro_batch_tokens or self.max_length
