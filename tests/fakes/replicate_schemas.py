"""Model schemas as Replicate serves them (`latest_version.openapi_schema`), for the fake Replicate and unit tests.

Shapes follow Cog's OpenAPI output as seen on replicate.com's API pages: inputs under
`components.schemas.Input.properties` with `x-order`, `minimum`/`maximum`, choices as
`allOf: [{"$ref": "#/components/schemas/<name>"}]` with the enum under `components.schemas`;
the output under `components.schemas.Output`. Only the inputs the bot cares about, plus a few it
must ignore, are listed; numbers are test data, not a copy of any model's current values.
"""

from __future__ import annotations

import copy
from typing import Any

STREAMED_TEXT_OUTPUT = {"type": "array", "items": {"type": "string"}, "title": "Output",
                        "x-cog-array-type": "iterator", "x-cog-array-display": "concatenate"}
PLAIN_TEXT_OUTPUT = {"type": "string", "title": "Output"}
IMAGE_LIST_OUTPUT = {"type": "array", "items": {"type": "string", "format": "uri"}, "title": "Output"}
SINGLE_IMAGE_OUTPUT = {"type": "string", "format": "uri", "title": "Output"}
FLUX_RATIOS = ["1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21"]


def cog_schema(inputs: dict[str, Any], output: dict[str, Any], enums: dict[str, Any] | None = None,
               required: list[str] | None = None) -> dict[str, Any]:
    """A whole Cog OpenAPI document with these `Input` properties (x-order added in the given order)."""
    properties = {name: {**prop, "x-order": order} for order, (name, prop) in enumerate(inputs.items())}
    input_schema: dict[str, Any] = {"type": "object", "title": "Input", "properties": properties}
    if required:
        input_schema["required"] = required
    schemas = {"Input": input_schema, "Output": output,
               **{name: {"enum": values, "type": "string" if isinstance(values[0], str) else "integer",
                         "title": name, "description": "An enumeration."} for name, values in (enums or {}).items()}}
    return {"openapi": "3.0.2", "info": {"title": "Cog", "version": "0.1.0"}, "paths": {},
            "components": {"schemas": schemas}}


def choice(name: str, default: Any, description: str) -> dict[str, Any]:
    return {"allOf": [{"$ref": f"#/components/schemas/{name}"}], "default": default, "description": description}


FLUX_SCHNELL = cog_schema(
    {
        "prompt": {"type": "string", "title": "Prompt", "description": "Prompt for generated image"},
        "seed": {"type": "integer", "title": "Seed", "description": "Random seed. Set for reproducible generation"},
        "num_outputs": {"type": "integer", "title": "Num Outputs", "default": 1, "minimum": 1, "maximum": 4},
        "aspect_ratio": choice("aspect_ratio", "1:1", "Aspect ratio for the generated image"),
        "output_format": choice("output_format", "webp", "Format of the output images"),
        "output_quality": {"type": "integer", "title": "Output Quality", "default": 80, "minimum": 0, "maximum": 100},
        "num_inference_steps": {"type": "integer", "title": "Num Inference Steps", "default": 4, "minimum": 1,
                                "maximum": 4},
        "go_fast": {"type": "boolean", "title": "Go Fast", "default": True},
    },
    IMAGE_LIST_OUTPUT,
    {"aspect_ratio": FLUX_RATIOS, "output_format": ["webp", "jpg", "png"]},
    required=["prompt"],
)

SDXL = cog_schema(
    {
        "prompt": {"type": "string", "title": "Prompt", "default": "An astronaut riding a rainbow unicorn"},
        "negative_prompt": {"type": "string", "title": "Negative Prompt", "default": ""},
        "image": {"type": "string", "format": "uri", "title": "Image", "description": "Input image for img2img"},
        "width": {"type": "integer", "title": "Width", "default": 1024, "minimum": 256, "maximum": 1536},
        "height": {"type": "integer", "title": "Height", "default": 1024, "minimum": 256, "maximum": 1536},
        "num_outputs": {"type": "integer", "title": "Num Outputs", "default": 1, "minimum": 1, "maximum": 4},
        "scheduler": choice("scheduler", "K_EULER", "scheduler"),
        "num_inference_steps": {"type": "integer", "title": "Num Inference Steps", "default": 50, "minimum": 1,
                                "maximum": 500},
        "guidance_scale": {"type": "number", "title": "Guidance Scale", "default": 7.5, "minimum": 1, "maximum": 50},
        "seed": {"type": "integer", "title": "Seed", "description": "Random seed. Leave blank to randomize the seed"},
    },
    IMAGE_LIST_OUTPUT,
    {"scheduler": ["DDIM", "DPMSolverMultistep", "HeunDiscrete", "KarrasDPM", "K_EULER_ANCESTRAL", "K_EULER", "PNDM"]},
)

LLAMA_3_TEMPLATE = ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n{system_prompt}<|eot_id|>"
                    "<|start_header_id|>user<|end_header_id|>\n\n{prompt}<|eot_id|>"
                    "<|start_header_id|>assistant<|end_header_id|>\n\n")
LLAMA_3_MAX_TOKENS = 8192
LLAMA_3_INSTRUCT = cog_schema(
    {
        "prompt": {"type": "string", "title": "Prompt", "default": ""},
        "system_prompt": {"type": "string", "title": "System Prompt", "default": "You are a helpful assistant"},
        "max_tokens": {"type": "integer", "title": "Max Tokens", "default": 512, "minimum": 1,
                       "maximum": LLAMA_3_MAX_TOKENS},
        "min_tokens": {"type": "integer", "title": "Min Tokens", "default": 0, "minimum": -1},
        "temperature": {"type": "number", "title": "Temperature", "default": 0.6, "minimum": 0, "maximum": 5},
        "top_p": {"type": "number", "title": "Top P", "default": 0.9, "minimum": 0, "maximum": 1},
        "top_k": {"type": "integer", "title": "Top K", "default": 50, "minimum": -1},
        "stop_sequences": {"type": "string", "title": "Stop Sequences", "default": "<|end_of_text|>,<|eot_id|>"},
        "prompt_template": {"type": "string", "title": "Prompt Template", "default": LLAMA_3_TEMPLATE},
        "seed": {"type": "integer", "title": "Seed"},
    },
    STREAMED_TEXT_OUTPUT,
)

GPT_4_1_MINI = cog_schema(
    {
        "prompt": {"type": "string", "title": "Prompt", "nullable": True},
        "system_prompt": {"type": "string", "title": "System Prompt", "nullable": True},
        "messages": {"type": "array", "items": {"type": "object"}, "title": "Messages", "default": []},
        "image_input": {"type": "array", "items": {"type": "string", "format": "uri"}, "default": []},
        "temperature": {"type": "number", "title": "Temperature", "default": 1, "minimum": 0, "maximum": 2},
        "max_completion_tokens": {"type": "integer", "title": "Max Completion Tokens", "default": 4096},
        "top_p": {"type": "number", "title": "Top P", "default": 1, "minimum": 0, "maximum": 1},
    },
    PLAIN_TEXT_OUTPUT,
)

KNOWN: dict[str, tuple[dict[str, Any], str]] = {
    "black-forest-labs/flux-schnell": (FLUX_SCHNELL, "The fastest image generation model tailored for local "
                                                     "development and personal use"),
    "stability-ai/sdxl": (SDXL, "A text-to-image generative AI model that creates beautiful images"),
    "meta/meta-llama-3-8b-instruct": (LLAMA_3_INSTRUCT, "An 8 billion parameter language model from Meta, fine "
                                                        "tuned for chat completions"),
    "openai/gpt-4.1-mini": (GPT_4_1_MINI, "Fast, affordable version of GPT-4.1"),
}


def known_schema(name: str) -> tuple[dict[str, Any], str] | None:
    """The realistic schema and description of a well-known model (a fresh copy), or None."""
    found = KNOWN.get(name)
    return (copy.deepcopy(found[0]), found[1]) if found else None
