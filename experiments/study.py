"""Study definitions: one TOML file per study, validated once into a frozen `StudySpec`."""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from experiments.paradigms import PARADIGMS
from experiments.paradigms.base import Paradigm, ParadigmOptions, merged_options

SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")
NONE = "none"  # a condition's role mapped to "none" is not shown (e.g. no references)
TWO_AFC = "2afc_exemplar"
# The [paradigm] table: each paradigm's options, told apart by `id`.
ParadigmOptionsUnion = Annotated[
    Union[tuple(type(p).Options for p in PARADIGMS.values())],  # noqa: UP007
    Field(discriminator="id"),
]


class StudyFileError(ValueError):
    """A study file that cannot be read or does not validate; the message names the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Condition(_Strict):
    """A between-subject condition: which units its participants see (by unit source), and
    which explanation method supplies each role the paradigm shows."""

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,50}$")
    source: list[str] = Field(min_length=1)  # TOML: one source id or a list of them
    method: str = Field(default="exemplars", min_length=1)  # for every role not in `roles`
    # role -> a method id, "none", or several method ids shown together (a paradigm's
    # `combinable` roles only); a one-element list is stored as its string
    roles: dict[str, str | list[str]] = Field(default_factory=dict)
    options: dict[str, Any] = Field(default_factory=dict)  # paradigm option overrides

    @field_validator("source", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("roles")
    @classmethod
    def _methods(cls, roles: dict[str, str | list[str]]) -> dict[str, str | list[str]]:
        out: dict[str, str | list[str]] = {}
        for role, value in roles.items():
            if isinstance(value, list):
                if not value or any(not m for m in value):
                    raise ValueError(f"{role!r} needs a method id or 'none'")
                if len(set(value)) != len(value):
                    raise ValueError(f"{role!r} lists a method twice")
                if len(value) > 1 and NONE in value:
                    raise ValueError(f"{role!r} cannot combine 'none' with methods")
                value = value[0] if len(value) == 1 else value  # one canonical spelling
            elif not value:
                raise ValueError(f"{role!r} needs a method id or 'none'")
            out[role] = value
        return out

    def methods_for(self, role: str) -> list[str]:
        """The methods whose images fill ``role``, in the order shown; [] when left out."""
        value = self.roles.get(role, self.method)
        methods = value if isinstance(value, list) else [value]
        return [] if methods == [NONE] else list(methods)

    def method_for(self, role: str) -> str | None:
        """The one method whose images fill ``role``; None when the condition leaves it out.
        A role that combines several methods has no single one: use :meth:`methods_for`."""
        methods = self.methods_for(role)
        if len(methods) > 1:
            raise ValueError(f"condition {self.name!r}: role {role!r} combines "
                             f"{', '.join(methods)}; ask methods_for")
        return methods[0] if methods else None


class Trials(_Strict):
    main: int = Field(ge=1, le=2000, description="main (non-catch) trials per participant")
    blocks: int = Field(default=1, ge=1, le=50)
    catch_rate: float = Field(default=0.1, ge=0.0, le=0.5)
    block_by: str | None = Field(
        default=None,
        description="within-subject blocks: a unit attribute ('layer' or 'source'); "
        "block order is counterbalanced across participants",
    )


class Practice(_Strict):
    trials: int = Field(default=3, ge=0, le=50)
    max_attempts: int = Field(default=3, ge=1, le=20)


class Texts(_Strict):
    consent: str = Field(min_length=1)
    instructions: str = Field(min_length=1)
    debrief: str = "Thank you for taking part."


class Question(_Strict):
    id: str = Field(pattern=r"^[a-z0-9_]{1,50}$")
    prompt: str = Field(min_length=1)
    kind: Literal["text", "choice"] = "text"
    options: list[str] = Field(default_factory=list)
    required: bool = False

    @model_validator(mode="after")
    def _options(self) -> Question:
        if self.kind == "choice" and len(self.options) < 2:
            raise ValueError("a choice question needs at least two options")
        return self


class Exclusions(_Strict):
    """Pre-registered exclusion rules (applied by the analysis; catch rule also screens out)."""

    catch_min_accuracy: float | None = Field(default=None, ge=0.0, le=1.0)
    instructions_min_seconds: float | None = Field(default=None, ge=0)
    total_minutes_min: float | None = Field(default=None, ge=0)
    total_minutes_max: float | None = Field(default=None, gt=0)
    max_same_response_fraction: float | None = Field(default=None, gt=0.5, le=1.0)
    max_practice_attempts: int | None = Field(default=None, ge=1)
    screen_out_on_catch: bool = False


class AnalysisPlan(_Strict):
    """The pre-registered confirmatory test, frozen with the launched version: the report
    gives it first and calls every other model exploratory."""

    formula: str = Field("correct ~ condition + (1|participant) + (1|unit_id)", min_length=3)
    term: str = Field(min_length=1)  # the fixed effect tested, e.g. "conditiondictionary"
    alpha: float = Field(0.05, gt=0, lt=1)
    alternative: Literal["two-sided", "greater", "less"] = "two-sided"


class Screening(_Strict):
    """What the participant's browser must offer, checked before consent: a trial that does
    not fit the window, or a phone's touch screen, would change what is measured."""

    min_width: int = Field(800, ge=0, le=10_000, description="CSS pixels; 0: no minimum")
    min_height: int = Field(600, ge=0, le=10_000, description="CSS pixels; 0: no minimum")
    allow_mobile: bool = False  # phones and tablets


class Recruitment(_Strict):
    platform: Literal["prolific", "none"] = "prolific"
    completion_code: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    screenout_code: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$")
    target_per_condition: int | None = Field(default=None, ge=1)
    session_timeout_minutes: int = Field(default=60, ge=1, le=24 * 60)
    # the bonus promised per correct main trial, in the Prolific study's currency
    bonus_per_correct: Decimal | None = Field(default=None, gt=0, le=100, decimal_places=2)


class StudySpec(_Strict):
    slug: str
    title: str = Field(min_length=1, max_length=200)
    paradigm: ParadigmOptionsUnion
    stimulus_set: str = Field(
        min_length=1, description="stimulus-set directory, relative to the file"
    )
    conditions: list[Condition] = Field(min_length=1)
    trials: Trials
    practice: Practice = Practice()
    texts: Texts
    questionnaire: list[Question] = Field(default_factory=list)
    exclusions: Exclusions = Exclusions()
    recruitment: Recruitment
    analysis: AnalysisPlan | None = None  # the pre-registered confirmatory test
    screening: Screening | None = None  # None: every device and window is let in

    @model_validator(mode="before")
    @classmethod
    def _read_older(cls, data: Any) -> Any:
        """Study files (and launched specs) written before paradigms became plugins: a
        ``paradigm`` name with a ``[two_afc]`` table, conditions with ``unit_kinds``."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if isinstance(data.get("paradigm"), str) or "two_afc" in data:
            options = data.pop("two_afc", {})
            name = data.get("paradigm", TWO_AFC)
            data["paradigm"] = {"id": name, **options} if isinstance(options, dict) else options
        if isinstance(data.get("conditions"), list):
            data["conditions"] = [
                {**{k: v for k, v in c.items() if k != "unit_kinds"}, "source": c["unit_kinds"]}
                if isinstance(c, dict) and "unit_kinds" in c and "source" not in c else c
                for c in data["conditions"]
            ]
        trials = data.get("trials")
        if isinstance(trials, dict) and trials.get("block_by") == "kind":
            data["trials"] = {**trials, "block_by": "source"}
        return data

    @model_validator(mode="after")
    def _check(self) -> StudySpec:
        if not SLUG.match(self.slug):
            raise ValueError(f"slug {self.slug!r} must be 2-63 lowercase letters, digits or dashes")
        names = [c.name for c in self.conditions]
        if len(set(names)) != len(names):
            raise ValueError("condition names must be unique")
        if self.trials.block_by not in (None, "layer", "source"):
            raise ValueError("trials.block_by must be 'layer' or 'source'")
        paradigm = self.paradigm_class
        for i, condition in enumerate(self.conditions):
            unknown = sorted(set(condition.roles) - set(paradigm.roles))
            if unknown:
                raise ValueError(
                    f"conditions.{i}.roles: {unknown[0]!r} is not a role of {paradigm.id} "
                    f"(its roles: {', '.join(paradigm.roles)})"
                )
            for role, value in condition.roles.items():
                if isinstance(value, list) and role not in paradigm.combinable:
                    can = ", ".join(sorted(paradigm.combinable)) or "none of its roles"
                    raise ValueError(
                        f"conditions.{i}.roles.{role}: {paradigm.id} shows one method's "
                        f"{role}, not {' + '.join(value)} (roles that combine methods: {can})"
                    )
            if "id" in condition.options:
                raise ValueError(f"conditions.{i}.options: the paradigm is chosen once per study")
            try:
                merged_options(self.paradigm, condition.options)
            except ValidationError as exc:
                err = exc.errors()[0]
                where = ".".join(str(p) for p in err["loc"])
                raise ValueError(f"conditions.{i}.options.{where}: {err['msg']}") from None
        if self.exclusions.screen_out_on_catch and (
            self.recruitment.screenout_code is None or self.exclusions.catch_min_accuracy is None
        ):
            raise ValueError(
                "exclusions.screen_out_on_catch needs recruitment.screenout_code "
                "and exclusions.catch_min_accuracy"
            )
        return self

    @property
    def paradigm_class(self) -> Paradigm:
        return PARADIGMS[self.paradigm.id]

    def options_for(self, condition: str) -> ParadigmOptions:
        """The paradigm options a condition's participants get: the study's, overridden."""
        found = next(c for c in self.conditions if c.name == condition)
        return merged_options(self.paradigm, found.options)

    def canonical_json(self) -> str:
        data = self.model_dump(mode="json")
        for optional in ("analysis", "screening"):  # specs launched before they existed
            if data[optional] is None:  # keep their digest
                del data[optional]
        if data["recruitment"]["bonus_per_correct"] is None:  # likewise
            del data["recruitment"]["bonus_per_correct"]
        return json.dumps(data, sort_keys=True)

    def digest(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()


def _describe(exc: ValidationError, path: Path) -> str:
    lines = [f"{path}: invalid study definition"]
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"  {where}: {msg}")
    return "\n".join(lines)


def parse_study(text: str, path: Path = Path("<study>")) -> StudySpec:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise StudyFileError(f"{path}: not valid TOML: {exc}") from None
    try:
        return StudySpec.model_validate(data)
    except ValidationError as exc:
        raise StudyFileError(_describe(exc, path)) from None


def load_study(path: Path) -> StudySpec:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise StudyFileError(f"{path}: cannot read study file ({exc.strerror})") from None
    return parse_study(text, path)


def stimulus_dir(spec: StudySpec, study_file: Path) -> Path:
    return (Path(study_file).parent / spec.stimulus_set).resolve()
