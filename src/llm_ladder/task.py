"""The task file (`task.toml`): its schema and loading.

A task names its examples, how to split them, the metric, the quality bar, budgets, models
and prices. Unknown keys are errors that name the key and the file. Paths are resolved
relative to the task folder. This module only validates; it reads no example data.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from llm_ladder.errors import LadderError, redact_url

TASK_FILE = "task.toml"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(Strict):
    """Where the examples are. `examples` are split; `test`, if given, is the test split."""

    examples: list[str] = Field(min_length=1)
    test: str | None = None
    id_field: str = "id"


class SplitConfig(Strict):
    train: float = Field(0.6, ge=0, le=1)
    dev: float = Field(0.1, ge=0, le=1)
    test: float = Field(0.3, ge=0, le=1)
    seed: int = 0
    max_test: int | None = Field(None, ge=1, description="cap on test examples (keeps runs short)")

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitConfig:
        if abs(self.train + self.dev + self.test - 1.0) > 1e-6:
            raise ValueError(
                f"train + dev + test must be 1.0, got {self.train + self.dev + self.test:g}"
            )
        return self


class MetricConfig(Strict):
    name: str = "normalized_match"
    labels: list[str] | None = None
    schema_file: str | None = Field(None, alias="schema")
    max_unscored_share: float = Field(
        0.05, ge=0, le=1,
        description="a rung with a larger share of unscorable predictions is not recommended")


class GenerationConfig(Strict):
    max_tokens: int = Field(64, ge=1, le=32768)
    temperature: float = Field(0.0, ge=0, le=2)
    # anti-loop controls over the answer's tokens; unset = the backend's default
    # (docs/generation.md). The openai backend refuses them: its API has no such setting.
    repetition_penalty: float | None = Field(
        None, ge=1, le=3, description="divide the logit of every token already in the answer "
        "(transformers' rule; 1 = off)")
    no_repeat_ngram_size: int | None = Field(
        None, ge=0, le=64, description="never repeat an n-gram of the answer (0 = off)")


class ModelConfig(Strict):
    """One model: a backend (entry point name), a model name or path, and its settings."""

    backend: str = "local"
    name: str = "smollm2-135m"
    base_url: str | None = None
    api_key_env: str | None = None
    path: str | None = None
    context_length: int | None = None
    threads: int | None = None
    batch_size: int | None = Field(None, ge=1, le=512, description=(
        "local backends: requests per batch; default the backend's own (local 64, llamacpp 8)"))
    batch_tokens: int | None = Field(None, ge=256, le=10_000_000, description=(
        "local backend: most KV-cache positions per batch, rows x (longest prompt + "
        "max_tokens); long prompts run in smaller batches (default 24,576)"))
    share_prefix: bool = Field(True, description=(
        "local backend: run the prompt prefix all rows of a batch share once (docs/models.md)"))
    dtype: Literal["float32", "bfloat16"] = Field("float32", description=(
        "weights of the local backend and of a launched vLLM; bfloat16 is faster on CPUs "
        "with native bf16 and changes some greedy answers (docs/benchmarks.md)"))
    packed_weights: bool = Field(True, description=(
        "local backend, float32 on CPU: matmuls through oneDNN with the weights packed once "
        "(~1.2x batched decoding; false = PyTorch's default kernels, docs/models.md)"))
    concurrency: int = Field(4, ge=1, le=256, description="servers: requests in flight")
    timeout_s: float = 60.0
    max_retries: int = 4
    # backend "vllm" (models/vllm.py): start a local vLLM instead of using `base_url`
    launch: bool = False
    launch_python: str | None = Field(None, description="a Python with vllm installed")
    launch_timeout_s: float = Field(600.0, gt=0)
    max_lora_rank: int = Field(64, ge=1, le=512, description="vllm: largest adapter rank")


class Price(Strict):
    """Per 1M tokens for hosted models, or dollars per hour for self-hosted ones."""

    input_per_1m: float | None = Field(None, ge=0)
    output_per_1m: float | None = Field(None, ge=0)
    usd_per_hour: float | None = Field(None, ge=0)
    training_usd_per_hour: float | None = Field(
        None, ge=0, description="machine that fine-tunes this model; default usd_per_hour")


class Budget(Strict):
    latency_p95_ms: float | None = Field(None, gt=0)
    cost_per_1k_usd: float | None = Field(None, ge=0)
    requests_per_day: float | None = Field(None, ge=0)
    base_model_upgrades_per_year: float | None = Field(
        None, ge=0, description="re-trainings a year (fine-tuned rungs), for cost of ownership")


class PromptConfig(Strict):
    system: str | None = None
    few_shot_k: int = Field(4, ge=1, le=64)
    cot_max_tokens: int = Field(192, ge=16, le=8192)


class OptimizeConfig(Strict):
    """The `optimized-prompt` rung's search (`[optimize]`): a budget in model calls on train +
    dev (never test), its seed, and what it tries (docs/optimize.md)."""

    budget_calls: int = Field(400, ge=8, le=1_000_000,
                              description="model calls the search may make")
    seed: int = 0
    k: list[int] | None = Field(None, description="demonstration counts tried; default "
                                "0, 2 and prompt.few_shot_k")
    demo_sets: int = Field(3, ge=1, le=32, description="bootstrapped demonstration sets tried")
    finalists: int = Field(3, ge=1, le=32, description="best on dev half A checked on half B")
    max_dev: int | None = Field(None, ge=2, description="dev examples searched on (a seeded "
                                "sample); default budget_calls / 4")
    proposer: str | None = Field(None, description="model key of a stronger model that writes "
                                 "candidate instructions from failed dev examples")


class SqlSource(Strict):
    url: str = Field(description="SQLAlchemy URL; use ${ENV} for secrets")
    query: str
    text_column: str
    id_column: str | None = None
    meta_columns: list[str] = Field(default_factory=list)
    max_rows: int = Field(100_000, ge=1)


class CorpusConfig(Strict):
    """Documents for the RAG rungs: folders/globs, SQL queries and http(s) URLs."""

    paths: list[str] = Field(default_factory=list)
    include: list[str] | None = None
    text_field: str = "text"
    sql: list[SqlSource] = Field(default_factory=list)
    urls: list[str] = Field(default_factory=list)
    chunker: Literal["structured", "fixed"] = "structured"
    chunk_tokens: int = Field(200, ge=16, le=512)
    chunk_overlap: int = Field(32, ge=0, le=256)
    embedder: str = "all-MiniLM-L6-v2"
    embedder_base_url: str | None = Field(None, description="OpenAI-compatible /v1 URL")
    embedder_api_key_env: str | None = None
    embedder_dtype: Literal["auto", "float32", "bfloat16", "int8"] = Field("auto", description=(
        "weights of the local embedder: auto = bfloat16 where the CPU has native bf16, else "
        "float32; int8 = ONNX Runtime with int8 weights (the `onnx` extra)"))
    store: str = "lancedb"
    pg_url_env: str | None = Field(None, description="env var holding the PostgreSQL URL")
    collection: str = "chunks"
    ann_min_chunks: int = Field(100_000, ge=256, description="build an ANN index from this size")
    max_file_mb: float = Field(20, gt=0)
    parse_timeout_s: float = Field(60, gt=0, description="per-document PDF/HTML parse budget")
    parse_memory_mb: int = Field(2048, ge=512, description="memory cap of the parser process")
    url_allow: list[str] = Field(default_factory=list, description=(
        "non-public hosts, addresses or CIDR networks URL sources may fetch from"))

    @model_validator(mode="after")
    def _has_sources(self) -> CorpusConfig:
        if not (self.paths or self.sql or self.urls):
            raise ValueError("a corpus needs at least one of paths, sql or urls")
        if self.chunk_overlap >= self.chunk_tokens:
            raise ValueError("chunk_overlap must be smaller than chunk_tokens")
        return self


class RetrievalConfig(Strict):
    k: int = Field(4, ge=1, le=50)
    mode: Literal["dense", "bm25", "hybrid"] = "hybrid"
    nprobes: int | None = Field(None, ge=1, description=(
        "LanceDB ANN index: partitions probed per search (default: a quarter of them, at "
        "least 40)"))
    refine_factor: int | None = Field(None, ge=0, description=(
        "LanceDB ANN index: re-rank refine_factor * k candidates with the full vectors "
        "(default 10; 0: none)"))


class RungsConfig(Strict):
    include: list[str] | None = None


class LadderConfig(Strict):
    """`[ladder]`: models as a dimension of the ladder (docs/models.md)."""

    models: list[str] | None = Field(None, min_length=1, description="model keys climbed "
                                     "together: every prompting rung on each, cheapest first")
    calibrate_n: int = Field(4, ge=1, le=50, description="dev inputs each model answers to "
                             "estimate its cost per request before the climb")


class FinetuneConfig(Strict):
    """LoRA fine-tuning of a small local model (`[finetune]`; its presence enables the rungs)."""

    base: str = Field("default", description="model key whose weights are tuned (local backend)")
    teacher: str | None = Field(None, description="model key of the teacher for `distill`")
    teacher_rung: str = Field("few-shot-nearest", description="how the teacher is prompted")
    eval_model: str | None = Field(
        None, description="model key the tuned rungs are evaluated on (a vllm backend loads "
                          "the adapter into its server); default: base, merged in-process")
    r: int = Field(16, ge=1, le=256)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: [
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    learning_rate: float = Field(1e-3, gt=0, le=1)
    full_learning_rate: float = Field(
        5e-5, gt=0, le=1, description="peak learning rate of the `full` rung (every weight "
                                      "trained; LoRA's learning_rate would wreck the base)")
    epochs: float = Field(3, gt=0, le=100)
    batch_size: int = Field(8, ge=1, le=1024)
    max_memory_gb: float | None = Field(
        None, gt=0, description="peak memory training should fit: the recipe splits batches "
                                "into micro-batches (same update) and checkpoints activations "
                                "only when needed, of as few layers as needed")
    micro_batch_tokens: int | None = Field(
        None, ge=1, description="split each batch into micro-batches of at most this many "
                                "padded tokens (same update); default: from max_memory_gb")
    gradient_checkpointing: Literal["auto", "on", "off"] = Field(
        "auto", description="auto: only when max_memory_gb needs it, on as few layers as "
                            "it needs; on: every layer")
    grad_accum: int = Field(1, ge=1, le=1024)
    packing: bool = Field(
        True, description="pack a batch's rows into one sequence with their shared prompt "
                          "prefix once, where that is estimated cheaper than padding them "
                          "(same loss and gradients; with dropout the prefix shares one "
                          "mask per batch)")
    max_seq_len: int = Field(512, ge=16, le=131072)
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    eval_every: int = Field(25, ge=1, description="steps between dev-loss checks")
    save_every: int = Field(25, ge=1, description="steps between checkpoints")
    patience: int = Field(3, ge=1, description="dev checks without improvement before stopping")
    seed: int = 0
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    quantize: Literal["auto", "none", "4bit"] = Field(
        "auto", description="4bit = QLoRA (CUDA + bitsandbytes); auto picks it on CUDA only")
    min_examples: int = Field(50, ge=1, description="warn below this many train examples")


class ServeConfig(Strict):
    """`ladder serve` (`[serve]`): auth, limits and output guards of the server (docs/serve.md)."""

    token_env: str = Field("LADDER_SERVE_TOKEN", description="env var holding the bearer token")
    model_name: str | None = Field(None, description="id in /v1/models; default TASK/RUNG")
    require_citations: bool = Field(False, description="RAG: refuse answers citing no valid [n]")
    output_schema: str | None = Field(None, description="JSON schema file the answer must match")
    strip_images: bool = Field(True, description="remove markdown/HTML images from answers")
    max_output_tokens: int = Field(512, ge=1, le=32768)
    max_body_bytes: int = Field(1_000_000, ge=256)
    max_concurrency: int = Field(8, ge=1, le=512, description="requests generated together")
    max_queue: int = Field(32, ge=0, le=100_000, description="requests waiting beyond those")
    timeout_s: float = Field(60.0, gt=0, le=3600)
    log_requests: bool = True
    redact: list[str] = Field(default_factory=list,
                              description="named patterns (email, phone, ...) or regexes")
    latency_probe: int = Field(8, ge=0, le=1000, description=(
        "test inputs `ladder run` sends through this serving path after each rung to measure "
        "served latency, alone and at latency_concurrency (0 = off; docs/decision.md)"))
    latency_concurrency: int = Field(4, ge=1, le=512, description=(
        "clients sending at once when served latency is measured: the load "
        "budget.latency_p95_ms is judged at"))


class StoreConfig(Strict):
    """Where runs, predictions, request logs and labels go (`[store]`, docs/store.md): SQLite
    in `.ladder/runs.db` unless `url_env` names an environment variable holding a PostgreSQL
    URL. The URL itself never goes in this file (it carries a password)."""

    url_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                                description="env var holding the postgresql:// URL")

    @model_validator(mode="before")
    @classmethod
    def _no_url(cls, data: Any) -> Any:
        if isinstance(data, dict) and "url" in data:
            raise ValueError("do not put the database URL in task.toml (it carries a "
                             "password): set it in an environment variable and name that, "
                             'e.g. url_env = "LADDER_STORE_URL"')
        return data


class ToolsConfig(Strict):
    """Tools the model may call (`[tools]`; its presence enables the tool-use rungs).

    `file` holds OpenAI-format tool schemas (checked by llm_ladder.tools.load_tools); examples
    may also bring their own in `meta.tools`. `implementations` maps a tool name to
    "module:function" or an http(s) URL (POST JSON).
    """

    file: str | None = Field(None, description="JSON file of tools in the OpenAI tools format")
    implementations: dict[str, str] = Field(default_factory=dict)
    max_steps: int = Field(4, ge=1, le=32, description="model turns per example, calls included")
    protocol: Literal["auto", "native", "json"] = Field(
        "auto", description="native tool calls (openai backend) or the prompted JSON protocol")
    timeout_s: float = Field(30.0, gt=0, le=3600, description="per tool execution")


class JudgeConfig(Strict):
    """A judge model scores open-ended outputs (`[judge]`, read by `[metric] name = "judge"`;
    docs/judge.md). `labels` is a file of human-scored answers, kept apart from the examples
    (never the test rows the judge scores): agreement, position bias and the PPI interval
    are measured on it."""

    model: str = Field("judge", description="model key in [models] that judges")
    mode: Literal["pointwise", "pairwise"] = "pointwise"
    scale: tuple[int, int] = Field((1, 5), description="pointwise: lowest and highest score")
    rubric: str = Field("", description="what a good answer is; shown to the judge")
    use_reference: bool = Field(True, description="show the reference answer to the judge")
    repeats: int = Field(1, ge=1, le=20, description="verdicts per item (self-consistency)")
    temperature: float = Field(0.0, ge=0, le=2)
    max_tokens: int = Field(96, ge=4, le=4096)
    labels: str | None = Field(None, description="JSONL of human-scored answers")
    agreement_floor: float = Field(
        0.6, ge=-1, le=1, description="minimum weighted kappa (pointwise) or preference "
        "accuracy (pairwise) before a judged rung may be recommended")

    @model_validator(mode="after")
    def _scale(self) -> JudgeConfig:
        if self.scale[1] <= self.scale[0]:
            raise ValueError(f"judge.scale must be [low, high] with low < high, got "
                             f"{list(self.scale)}")
        return self


class Task(Strict):
    """A validated task. `root` is the task folder (set by `load_task`)."""

    name: str
    description: str = ""
    data: DataConfig
    split: SplitConfig = SplitConfig()
    metric: MetricConfig = MetricConfig()
    bar: float | None = Field(None, ge=0, le=1, description="quality bar on the metric")
    budget: Budget = Budget()
    generation: GenerationConfig = GenerationConfig()
    prompt: PromptConfig = PromptConfig()
    optimize: OptimizeConfig | None = None  # the optimized-prompt rung climbs when set
    rungs: RungsConfig = RungsConfig()
    ladder: LadderConfig = LadderConfig()
    corpus: CorpusConfig | None = None
    tools: ToolsConfig | None = None
    retrieval: RetrievalConfig = RetrievalConfig()
    finetune: FinetuneConfig | None = None
    serve: ServeConfig = ServeConfig()
    store: StoreConfig = StoreConfig()
    judge: JudgeConfig | None = None
    models: dict[str, ModelConfig] = Field(default_factory=lambda: {"default": ModelConfig()})
    prices: dict[str, Price] = Field(default_factory=dict)
    root: Path = Field(Path("."), exclude=True)

    @model_validator(mode="after")
    def _ann_settings_need_lancedb(self) -> Task:
        given = [k for k in ("nprobes", "refine_factor")
                 if getattr(self.retrieval, k) is not None]
        if given and (self.corpus is None or self.corpus.store != "lancedb"):
            raise ValueError(f"retrieval.{given[0]} tunes LanceDB's ANN index; it needs a "
                             f"[corpus] with store = 'lancedb' (pgvector searches HNSW)")
        return self

    def path(self, rel: str) -> Path:
        p = Path(rel)
        return p if p.is_absolute() else self.root / p

    @property
    def state_dir(self) -> Path:
        return self.root / ".ladder"

    def model(self, key: str | None = None) -> ModelConfig:
        key = key or "default"
        if key in self.models:
            return self.models[key]
        known = ", ".join(sorted(self.models))
        raise LadderError(f"unknown model {key!r} in task {self.name!r}; known: {known}")


def _format_validation(err: ValidationError, file: Path) -> str:
    lines = [f"{file}: invalid task file"]
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            lines.append(f"  unknown key '{loc}'")
        elif e["type"] == "missing":
            lines.append(f"  missing required key '{loc}'")
        else:
            got = e.get("input")  # a table may hold a database URL: show scalars only
            shown = "" if isinstance(got, dict | list) else f" (got {redact_url(repr(got))})"
            lines.append(f"  '{loc}': {e['msg']}{shown}")
    return "\n".join(lines)


def parse_task(raw: dict[str, Any], root: Path, file: Path) -> Task:
    try:
        task = Task.model_validate(raw)
    except ValidationError as err:
        raise LadderError(_format_validation(err, file)) from None
    task.root = root
    return task


def load_task(task_dir: str | Path) -> Task:
    """Read TASK_DIR/task.toml (or a .toml path) into a validated Task."""
    p = Path(task_dir)
    file = p if p.suffix == ".toml" else p / TASK_FILE
    if not file.is_file():
        raise LadderError(f"{file}: task file not found")
    try:
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise LadderError(f"{file}: not UTF-8 ({e.reason} at byte {e.start})") from None
    except tomllib.TOMLDecodeError as e:
        raise LadderError(f"{file}: TOML syntax error: {e}") from None
    return parse_task(raw, file.parent.resolve(), file)
