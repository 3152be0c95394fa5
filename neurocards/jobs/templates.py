"""Video templates from a TOML data file and the prompt each one produces."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from neurocards.config import FORMATS, ConfigError

ASPECT_RATIOS = FORMATS


@dataclass(frozen=True)
class Template:
    id: str
    title: str
    prompt: str
    model: str | None
    aspect_ratio: str
    duration_s: int

    def render(self, description: str, wishes: str) -> str:
        wishes_text = f"Additional wishes from the seller: {wishes.strip()}." if wishes.strip() else ""
        text = self.prompt.replace("{description}", description.strip()).replace("{wishes}", wishes_text)
        return " ".join(text.split())


class TemplateCatalog:
    def __init__(self, templates: list[Template]) -> None:
        if not templates:
            raise ConfigError("prompts: no templates defined")
        self._by_id = {t.id: t for t in templates}
        self.ordered = templates

    def get(self, template_id: str) -> Template | None:
        return self._by_id.get(template_id)

    @classmethod
    def load(cls, path: Path | None = None) -> TemplateCatalog:
        if path is None:
            text = resources.files("neurocards").joinpath("prompts.toml").read_text(encoding="utf-8")
            source = "neurocards/prompts.toml"
        else:
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(f"config: generation.prompts_file cannot be read: {exc.strerror}") from None
            source = str(path)
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"prompts: {source} is not valid TOML: {exc}") from None
        templates: list[Template] = []
        for tid, spec in raw.get("templates", {}).items():
            if not isinstance(spec, dict) or not isinstance(spec.get("title"), str) \
                    or not isinstance(spec.get("prompt"), str):
                raise ConfigError(f"prompts: templates.{tid} needs a title and a prompt")
            if "{description}" not in spec["prompt"]:
                raise ConfigError(f"prompts: templates.{tid}.prompt must contain {{description}}")
            aspect = spec.get("aspect_ratio", "9:16")
            if aspect not in ASPECT_RATIOS:
                raise ConfigError(f"prompts: templates.{tid}.aspect_ratio must be one of {ASPECT_RATIOS}")
            duration = spec.get("duration_s", 8)
            if not isinstance(duration, int) or duration <= 0:
                raise ConfigError(f"prompts: templates.{tid}.duration_s must be a positive integer")
            if len(tid) > 24 or not tid.replace("_", "").isalnum():
                raise ConfigError(f"prompts: template id {tid!r} must be short and alphanumeric")
            model = spec.get("model")
            templates.append(Template(tid, spec["title"], spec["prompt"],
                                      model if isinstance(model, str) and model else None, aspect, duration))
        return cls(templates)
