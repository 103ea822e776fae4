"""`adapters.slack_format`: model output made inert, and captions that markup in a prompt cannot garble."""

from __future__ import annotations

from adapters.slack_format import escape, image_caption, image_links
from bot.replies import Image, Images, RunInfo

PNG = Image(data=b"png", content_type="image/png", filename="image-1.png", url="https://replicate.delivery/a.png")


def images(prompt: str, *pictures: Image) -> Images:
    return Images(images=pictures or (PNG,), prompt=prompt, seed=42, run=RunInfo(model="black-forest-labs/flux-schnell"))


def test_escape_makes_mentions_and_links_literal() -> None:
    assert escape("<!channel> <@U1> <https://x|y> & co") == "&lt;!channel&gt; &lt;@U1&gt; &lt;https://x|y&gt; &amp; co"


def test_caption_puts_model_and_seed_before_a_prompt_whose_markup_is_unclosed() -> None:
    caption = image_caption(images("a ```cat *bold _lean"))
    head, prompt = caption.split("\n")
    assert head == "🖼 image · *model:* `black-forest-labs/flux-schnell` · *seed:* 42"
    assert prompt == "> a ```cat *bold _lean"


def test_caption_quotes_every_line_of_the_prompt_and_keeps_the_note_above_it() -> None:
    caption = image_caption(images("line one\nline <two>"), note="<https://x|image 1>")
    assert caption.split("\n")[1:] == ["<https://x|image 1>", "> line one", "> line &lt;two&gt;"]


def test_long_prompt_is_cut_in_the_caption() -> None:
    caption = image_caption(images("p" * 5000))
    assert len(caption) < 700 and caption.endswith("…")


def test_links_are_numbered_by_their_place_in_the_set() -> None:
    second = Image(data=b"", content_type="", filename="image-2", url="https://replicate.delivery/b.png")
    assert image_links(images("x", PNG, second), [second]) == "<https://replicate.delivery/b.png|image 2>"
