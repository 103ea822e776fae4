"""Discord: `/ask` and `/imagine` as application commands, answered by editing the deferred response.

Flow per interaction: parse and validate (no I/O) → bad input answered ephemerally → otherwise defer
at once (inside the 3 s deadline, before any call to Replicate) → stream the answer into the
original response (edits coalesced per message), continuing in follow-ups past 2,000
characters → images as attachments. Every final reply goes through `CommandReplies` (interaction while its
token lives, then the channel, then a DM); a command whose answer can go nowhere has its prediction cancelled.
Every send and edit carries `AllowedMentions.none()`. The answer's Stop and Again buttons: `adapters.discord_buttons`.
"""

# No `from __future__ import annotations`: discord.py reads the command signatures' annotations at runtime.

import asyncio
import datetime
import io
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import aclosing
from typing import Any, assert_never

import discord
import yarl
from aiohttp import web
from discord import app_commands

from adapters.base import CommandIntake
from adapters.discord_admin import ADMIN_GROUP, MEMBER_GROUP, DiscordAdministration
from adapters.discord_buttons import PERSISTENT_BUTTONS, AgainButton, AnswerButtons, ButtonPresses, buttons_view
from adapters.discord_commands import MODEL_KINDS, build_command, origin_of, register_commands
from adapters.discord_conversations import DiscordConversations, stopped_text
from adapters.discord_format import (
    DEFAULT_ATTACHMENT_LIMIT_BYTES,
    MAX_ATTACHMENTS,
    MAX_MESSAGE_CHARS,
    fit,
    image_caption,
)
from adapters.discord_replies import (
    DELIVERY_ERRORS,
    CommandReplies,
    Delivered,
    Form,
    Message,
    Place,
    TokenExpired,
    rate_limited_call,
)
from adapters.discord_resume import ResumedAnswer, destination_of
from adapters.discord_shards import GatewayPlan, IdentifyTurns, plan_gateway, shard_states, sharded_client
from adapters.discord_startup import LOGIN_ERRORS, gateway_closed, login_failed
from adapters.rendering import RenderLimits, StreamingReply
from bot.core import CommandCore
from bot.errors import FailureKind
from bot.models import ModelKind
from bot.options import OptionSpec, options_for
from bot.replies import FINAL_EVENTS, Failure, Image, Images, ReplyEvent, Status, TextDelta, TextDone
from bot.requests import CommandName, CommandRequest
from bot.text import close_open_fence, split_message
from config.settings import DiscordSettings, Settings

log = logging.getLogger(__name__)

# Timings (message limits: `adapters.discord_format`).
# Interaction responses and follow-ups are edited through the interaction's webhook, whose rate-limit
# bucket is that interaction's own (discord.py keys it by webhook token), not the channel's: one edit a
# second per message stays inside it, however many answers stream in one channel.
EDIT_INTERVAL_S = 1.0
INTERACTION_TOKEN_LIFETIME = datetime.timedelta(minutes=15)
TOKEN_SAFETY_MARGIN = datetime.timedelta(seconds=60)
NO_MENTIONS = discord.AllowedMentions.none()
THINKING_TEXT = "⏳ Working on it…"
COMMAND_FAILED_TEXT = "⚠️ Something went wrong on our side before I could start. Try again in a moment."
CANNOT_ATTACH_TEXT = (
    "I can't attach files in this channel. Ask a server admin to give me the **Attach Files** permission here."
)
INCOMPLETE_NOTE = "\n\n*(answer incomplete)*"


class InteractionMessages:
    """The messages of one interaction, as the streaming renderer sees them (original + follow-ups), each with
    the buttons `AnswerButtons` gives it.

    Past the token's lifetime every call raises `TokenExpired` rather than reach the webhook.
    """

    ORIGINAL = "@original"

    def __init__(
        self, interaction: discord.Interaction, token_alive: Callable[[], bool], buttons: AnswerButtons
    ) -> None:
        self._interaction = interaction
        self._token_alive = token_alive
        self.buttons = buttons
        self.original_id: int | None = None  # the original response's message id, once an edit returned it

    async def post(self, text: str) -> str:
        self._check_token()
        view = self.buttons.view_for(text)
        message = await rate_limited_call(self._interaction.followup.send(
            content=text, wait=True, allowed_mentions=NO_MENTIONS, **_components(view)
        ))
        self.buttons.shown(str(message.id), view)
        return str(message.id)

    async def edit(self, message_id: str, text: str) -> None:
        self._check_token()
        view = self.buttons.view_for(text)
        await self._edit(message_id, content=text, allowed_mentions=NO_MENTIONS, view=view)
        self.buttons.shown(message_id, view)

    async def set_view(self, message_id: str, view: discord.ui.View | None) -> None:
        """Only the buttons of a message change."""
        self._check_token()
        await self._edit(message_id, view=view)

    async def set_view_at_handover(self, message_id: str, view: discord.ui.View | None) -> None:
        """`set_view` once the answer leaves the interaction: the token is past our margin but not Discord's, so
        this last edit still lands."""
        await self._edit(message_id, view=view)

    async def _edit(self, message_id: str, **fields: Any) -> None:
        if message_id == self.ORIGINAL:
            message = await rate_limited_call(self._interaction.edit_original_response(**fields))
            self.original_id = message.id
        else:
            await rate_limited_call(self._interaction.followup.edit_message(int(message_id), **fields))

    async def delete(self, message_id: str) -> None:
        self._check_token()
        if message_id == self.ORIGINAL:
            await rate_limited_call(self._interaction.delete_original_response())
        else:
            await rate_limited_call(self._interaction.followup.delete_message(int(message_id)))

    def _check_token(self) -> None:
        if not self._token_alive():
            raise TokenExpired(f"interaction {self._interaction.id}")


def _components(view: discord.ui.View | None) -> dict[str, Any]:
    """A new message's `view` argument: discord.py's webhook send takes a view or nothing (not None)."""
    return {"view": view} if view is not None else {}


class DiscordAdapter:
    """Holds the core; turns interactions into core requests and reply events into Discord messages."""

    name = "discord"

    def __init__(self, core: CommandCore, config: DiscordSettings, intake: CommandIntake) -> None:
        self._core = core
        self._config = config
        self._intake = intake
        intents = discord.Intents.none()
        intents.guilds = True  # channel cache for follow-up posts
        # Replies, mentions and DMs (not privileged); their text only when it mentions the bot or is a DM, unless
        # the privileged Message Content intent is enabled in the Developer Portal and here.
        intents.guild_messages = intents.dm_messages = True
        intents.message_content = config.message_content
        # Sharded always: without DISCORD_SHARD_COUNT, as many shards as Discord recommends (`_setup_hook`).
        self.client = sharded_client(config, intents=intents, allowed_mentions=NO_MENTIONS)
        self._conversations = DiscordConversations(
            self.client, core, intake, message_content=config.message_content
        )
        # discord.py awaits `client.setup_hook()` once at login and dispatches each event to the client's
        # `on_<event>`; setting them on the instance spares a Client subclass.
        self.client.setup_hook = self._setup_hook  # type: ignore[method-assign]
        self.client.on_message = self._conversations.on_message  # type: ignore[attr-defined]
        presses = ButtonPresses(intake, self._conversations.answer_again)
        self.client.on_replicate_button = presses.on_press  # type: ignore[attr-defined]
        self.tree = app_commands.CommandTree(self.client)
        self.tree.error(self._on_command_error)
        self._administration = DiscordAdministration(intake)
        self.registrations_skipped = 0
        self._gateway: asyncio.Task[None] | None = None
        self._plan: GatewayPlan | None = None  # the shards this process runs, once Discord said how many
        self._signing_in = False  # `login` began: from then on discord.py has something to close

    # --- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Point discord.py at the configured API (tests, proxies), log in and connect in the background.

        A refused token or an unreachable API raises `StartupError`; a gateway that refuses the bot later
        ends `wait_closed` with one. The commands are built here, not earlier: their options come from the
        models looked up at start-up.
        """
        for command in CommandName:
            self.tree.add_command(self._command(command))
        for group in self._administration.groups():
            self.tree.add_command(group)
        discord.http.Route.BASE = self._config.api_url
        if self._config.gateway_url:
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self._config.gateway_url)
        self._signing_in = True
        try:
            await self.client.login(self._config.token)
        except LOGIN_ERRORS as error:
            raise login_failed(error, self._config.api_url) from error
        # The adapter owns the gateway task: it is not a command, so shutdown must not wait on it as one.
        self._gateway = asyncio.create_task(self._stay_connected(), name="discord-gateway")

    async def _stay_connected(self) -> None:
        """The gateway connection, which discord.py re-establishes itself unless Discord refuses it for good."""
        try:
            await self.client.connect(reconnect=True)
        except (discord.ConnectionClosed, discord.PrivilegedIntentsRequired) as error:
            raise gateway_closed(error) from error

    async def wait_closed(self) -> None:
        """Until the gateway connection has ended for good; raises `StartupError` if Discord refused it."""
        if self._gateway is not None:
            await asyncio.shield(self._gateway)

    async def _setup_hook(self) -> None:
        # Presses of buttons on any message, sent before a restart too, match these by their custom id.
        self.client.add_dynamic_items(*PERSISTENT_BUTTONS)
        self._plan = await plan_gateway(self.client, self._config)
        application_id = self.client.application_id or 0
        turns = IdentifyTurns(lambda: self._core.shared_state, application_id, self._plan.max_concurrency)
        self.client.before_identify_hook = turns.wait_turn  # type: ignore[method-assign]
        self.registrations_skipped += await register_commands(self.client, self.tree, self._config.guild_ids)

    async def wait_until_ready(self) -> None:
        await self.client.wait_until_ready()

    def http_routes(self) -> list[web.RouteDef]:
        """None: Discord reaches the bot over the gateway."""
        return []

    async def is_connected(self) -> bool:
        """Connected when every shard this process runs is: discord.py keeps its ready flag through a dropped
        gateway (it clears it only in close()), so each shard's socket is asked."""
        states = self.shard_states()
        return self.client.is_ready() and not self.client.is_closed() and bool(states) and all(states.values())

    def shard_states(self) -> dict[int, bool]:
        """Each shard this process runs: whether its gateway socket is open (empty before Discord said how many)."""
        return shard_states(self.client, self._plan.shard_ids) if self._plan is not None else {}

    async def close(self) -> None:
        # An AutoShardedClient that never began `login` (another adapter failed to start first) cannot close:
        # its event queue is made in login. It holds nothing open yet.
        if self._signing_in:
            await self.client.close()
        if self._gateway is not None:
            self._gateway.cancel()
            await asyncio.gather(self._gateway, return_exceptions=True)  # a failure is `wait_closed`'s to report

    # --- commands -----------------------------------------------------------------------------------

    def _command(self, command: CommandName) -> app_commands.Command[Any, ..., None]:
        """The command with the options its models can use, bounded by what the bot really allows."""
        catalog, kind = self._core.models, MODEL_KINDS[command]
        return build_command(
            command,
            self._on_command,
            [spec for spec in options_for(command) if self._offers(spec, kind)],
            upper_bounds={"max_tokens": catalog.max_tokens_limit(self._core.limits.max_tokens_cap)},
            choices={"model": catalog.refs(kind), "aspect_ratio": catalog.aspect_ratio_choices()},
        )

    def _offers(self, spec: OptionSpec, kind: ModelKind) -> bool:
        """Whether some model of `kind` can use the option (an option the table adds is offered by default)."""
        catalog = self._core.models
        if spec.name == "model":  # when there is a choice, or when the command's own model was left out
            models = catalog.refs(kind)
            return len(models) > 1 or bool(models and catalog.default(kind) is None)
        if spec.name == "aspect_ratio":
            return bool(catalog.aspect_ratio_choices())
        if spec.name == "negative_prompt":
            return catalog.takes_negative_prompt()
        return True

    async def _on_command_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        """Whatever went wrong inside a command (a defer Discord refused, a bug), the user hears it privately."""
        if isinstance(error, app_commands.CommandNotFound) and error.parents[:1] in ([MEMBER_GROUP], [ADMIN_GROUP]):
            # A subcommand this bot doesn't have (a client that hasn't caught up with the registration): the core
            # answers it as it answers any unknown word after /replicate.
            await self._administration.administer(interaction, error.name)
            return
        cause = getattr(error, "original", error)
        name = interaction.command.name if interaction.command else "?"
        if isinstance(cause, discord.HTTPException):  # Discord refused a call (the defer, a permission)
            log.warning("Discord: /%s failed: Discord answered %s (%s)", name, cause.status, cause.code)
        else:
            log.error("Discord: /%s failed", name, exc_info=cause)
        try:
            if interaction.response.is_done():
                await interaction.followup.send(COMMAND_FAILED_TEXT, ephemeral=True, allowed_mentions=NO_MENTIONS)
            else:
                await interaction.response.send_message(
                    COMMAND_FAILED_TEXT, ephemeral=True, allowed_mentions=NO_MENTIONS
                )
        except discord.HTTPException as refused:
            log.warning("Discord: could not tell the user about the failure either (%s)", refused.status)

    async def _on_command(
        self, interaction: discord.Interaction, command: CommandName, prompt: str, typed_options: Mapping[str, object]
    ) -> None:
        async def refuse(message: str) -> None:
            await interaction.response.send_message(fit(message), ephemeral=True, allowed_mentions=NO_MENTIONS)

        async def defer() -> None:
            await interaction.response.defer(thinking=True)

        def can_answer_here(request: CommandRequest) -> str | None:
            may_attach = interaction.app_permissions.attach_files
            if request.command is CommandName.IMAGINE and interaction.guild_id and not may_attach:
                return CANNOT_ATTACH_TEXT
            return None

        async def answer(request: CommandRequest, ack_latency_s: float) -> None:
            await self._answer(interaction, request, ack_latency_s)

        await self._intake.take(
            delivery_key=str(interaction.id),
            origin=origin_of(interaction),
            command=command,
            text=prompt,
            typed_options=typed_options,
            acknowledge=defer,
            refuse=refuse,
            answer=answer,
            precondition=can_answer_here,
        )

    # --- answers --------------------------------------------------------------------------------------

    async def resume(
        self, request: CommandRequest, destination: Mapping[str, Any], events: AsyncIterator[ReplyEvent]
    ) -> None:
        """An answer a stopped process began (`adapters.base.Adapter.resume`): `adapters.discord_resume`."""
        lifetime = INTERACTION_TOKEN_LIFETIME - TOKEN_SAFETY_MARGIN
        in_dm = request.origin.workspace_id is None

        async def link(message_ids: list[int]) -> None:
            dm_user = int(request.origin.user_id) if in_dm else None
            await self._conversations.link_answer(message_ids, request.conversation_id, dm_user=dm_user)

        answer = ResumedAnswer(self.client, request, destination, lifetime.total_seconds(),
                               lambda text: self._conversations.final_text(text, in_dm=in_dm), link)
        await answer.run(events)

    async def _answer(self, interaction: discord.Interaction, request: CommandRequest, ack_latency_s: float) -> None:
        """Stream into the interaction while its token lives; every final reply goes along `CommandReplies`."""
        self._core.note_destination(request.request_id, destination_of(interaction))  # for a survivor, if we die
        def token_alive() -> bool:
            return not self._token_expired(interaction)

        messages = InteractionMessages(
            interaction, token_alive, AnswerButtons(request.request_id, MAX_MESSAGE_CHARS)
        )
        reply = StreamingReply(
            messages,
            InteractionMessages.ORIGINAL,
            RenderLimits(max_chars=MAX_MESSAGE_CHARS, edit_interval_s=EDIT_INTERVAL_S),
        )
        replies = CommandReplies(self.client, interaction, token_alive)
        in_dm = interaction.guild_id is None
        def final_text(text: str) -> str:
            return self._conversations.final_text(text, in_dm=in_dm)

        answer = _Answer(interaction, request, messages, reply, replies, final_text)
        async def link(message_ids: list[int], *, dm: bool = False) -> None:
            """The answer's messages; and with `dm`, the user's DM (before the final text, messages or not)."""
            dm_user = interaction.user.id if dm else None
            await self._conversations.link_answer(message_ids, request.conversation_id, dm_user=dm_user)

        handed_over = False
        notice: Delivered | None = None
        try:
            async with aclosing(self._core.execute(request, ack_latency_s=ack_latency_s)) as events:
                async for event in events:
                    if not handed_over and not token_alive():
                        handed_over = True
                        await reply.aclose()  # nothing more goes through the interaction's webhook
                        await answer.retire_buttons()
                        if not isinstance(event, FINAL_EVENTS):
                            notice = await answer.announce_handover()
                            if notice is None:
                                return  # the answer has nowhere to go: leaving `execute` cancels the prediction
                    match event:
                        case Status():
                            reply.set_status(f"⏳ {event.text}")
                        case TextDelta():
                            reply.append(event.text)
                        case TextDone():
                            # Linked before the final text shows (and again for messages it added), so a reply
                            # typed at once finds the conversation.
                            linked = [] if handed_over else answer.message_ids_shown()
                            await link(linked, dm=in_dm)
                            delivered = await answer.send_text(event)
                            if delivered is not None:
                                await link([i for i in await answer.message_ids(delivered) if i not in linked])
                        case Images():
                            await reply.aclose()
                            await answer.send_images(event)
                        case Failure():
                            await answer.send_failure(event)
                        case _:
                            assert_never(event)
            await replies.discard(notice)
        finally:
            await reply.aclose()

    @staticmethod
    def _token_expired(interaction: discord.Interaction) -> bool:
        deadline = interaction.created_at + INTERACTION_TOKEN_LIFETIME - TOKEN_SAFETY_MARGIN
        return discord.utils.utcnow() >= deadline


class _Answer:
    """The final replies of one command, each in the forms the interaction, the channel and a DM show it."""

    def __init__(
        self,
        interaction: discord.Interaction,
        request: CommandRequest,
        messages: InteractionMessages,
        reply: StreamingReply,
        replies: CommandReplies,
        final_text: Callable[[str], str],
    ) -> None:
        self._interaction = interaction
        self._request = request
        self._messages = messages
        self._reply = reply
        self._replies = replies
        self._final_text = final_text

    def _lead(self, place: Place) -> str:
        """Who asked, first in a plain message: outside the interaction nothing else says it."""
        if place is Place.DM:
            return f"Your /{self._request.command} from <#{self._interaction.channel_id}> (I can't post there):\n"
        return f"Answer to /{self._request.command} from <@{self._request.origin.user_id}>:\n"

    def _plain(self, place: Place, text: str) -> list[Message]:
        return [Message(chunk) for chunk in split_message(self._lead(place) + text, MAX_MESSAGE_CHARS)]

    async def retire_buttons(self) -> None:
        """The answer leaves the interaction: its messages keep what they show, without the Stop that would
        outlive it there (the answer's own message in the channel carries its buttons)."""
        self._messages.buttons.end(None, None)
        try:
            await self._messages.buttons.settle(self._reply.message_ids, self._messages.set_view_at_handover)
        except Exception as error:  # cosmetic: a stale Stop (a press says "no longer running") must not stop the answer
            log.info("Discord: Stop stays on the first messages of command %s (%s)", self._request.request_id,
                     type(error).__name__)

    async def announce_handover(self) -> Delivered | None:
        """Past the token, say where the answer will come; if no place takes even that, nothing will."""
        command, user = self._request.command, self._request.origin.user_id

        def notice(place: Place) -> list[Message]:
            if place is Place.DM:
                return [Message(f"⏳ Your /{command} from <#{self._interaction.channel_id}> is still running, and I "
                                "can't post there: the answer will come here.")]
            return [Message(f"⏳ /{command} from <@{user}> is still running: the answer will be posted here.")]

        return await self._replies.deliver(
            Form(None, notice), what="a still-running notice", if_lost="cancelling its prediction"
        )

    async def send_text(self, done: TextDone) -> Delivered | None:
        text = self._final_text(done.text)

        async def in_interaction() -> None:
            self._messages.buttons.end(text, done.again_id)  # Stop goes, Again comes with the final edit
            await self._reply.finish(text)
            await self._settle_buttons()

        return await self._replies.deliver(
            Form(in_interaction, lambda place: self._plain(place, text)),
            what="the answer",
            if_lost="the answer is lost",
        )

    async def _settle_buttons(self) -> None:
        await self._messages.buttons.settle(self._reply.message_ids, self._messages.set_view)

    def message_ids_shown(self) -> list[int]:
        """The interaction's messages known by id so far (the streamed answer's)."""
        original = self._messages.original_id
        ids = [original if message_id == InteractionMessages.ORIGINAL else int(message_id)
               for message_id in self._reply.message_ids]
        return [message_id for message_id in ids if message_id is not None]

    async def message_ids(self, delivered: Delivered) -> list[int]:
        """The ids of the messages that carry the answer: the interaction's (original response, follow-ups), or
        the plain ones sent in its place."""
        if delivered.place is not Place.INTERACTION:
            return [message.id for message in delivered.messages]
        ids = []
        for message_id in self._reply.message_ids:
            if message_id != InteractionMessages.ORIGINAL:
                ids.append(int(message_id))
            elif self._messages.original_id is not None:
                ids.append(self._messages.original_id)
            else:  # never edited by id here (unlikely): ask Discord which message it is
                try:
                    ids.append((await self._interaction.original_response()).id)
                except DELIVERY_ERRORS as error:
                    log.info("Discord: could not look up the original response of %s (%s)",
                             self._interaction.id, type(error).__name__)
        return ids

    async def send_images(self, images: Images) -> None:
        limit = getattr(self._interaction, "filesize_limit", DEFAULT_ATTACHMENT_LIMIT_BYTES)
        attachable = [image for image in images.images if image.data and len(image.data) <= limit][:MAX_ATTACHMENTS]
        links = [image for image in images.images if image not in attachable]
        files = tuple((image.filename, image.data) for image in attachable)

        buttons = self._messages.buttons
        buttons.end(None, images.again_id)
        again = buttons_view(AgainButton(images.again_id) if images.again_id else None)  # in place of Stop

        async def attached() -> None:
            await self._interaction.edit_original_response(
                content=image_caption(images, links),
                attachments=[discord.File(io.BytesIO(data), filename=name) for name, data in files],
                allowed_mentions=NO_MENTIONS,
                view=again,
            )
            buttons.shown(InteractionMessages.ORIGINAL, again)

        async def linked() -> None:  # Discord refused the files (too large, Attach Files taken away)
            await self._interaction.edit_original_response(
                content=image_caption(images, list(images.images)), attachments=[], allowed_mentions=NO_MENTIONS,
                view=again,
            )
            buttons.shown(InteractionMessages.ORIGINAL, again)

        def as_message(
            place: Place, shown_as_links: list[Image], with_files: tuple[tuple[str, bytes], ...]
        ) -> list[Message]:
            lead = self._lead(place)
            return [Message(lead + image_caption(images, shown_as_links, MAX_MESSAGE_CHARS - len(lead)), with_files)]

        await self._replies.deliver(
            Form(attached, lambda place: as_message(place, links, files)),
            Form(linked, lambda place: as_message(place, list(images.images), ())),
            what="the images",
            if_lost="the images are lost",
        )

    async def send_failure(self, failure: Failure) -> None:
        """Errors are ephemeral while the interaction lives; a half-streamed answer keeps its (settled) text
        beside the private error. Past the token, both go to the channel. A stopped answer ends with what it had
        and says so, in place: the presser asked for it, there is nothing private to tell."""
        error = f"⚠️ {failure.message}"
        partial = close_open_fence(self._reply.text) if self._reply.text.strip() else ""
        self._messages.buttons.end(None, None)  # no Stop any more, no Again for a failure

        async def stopped() -> None:
            await self._reply.finish(stopped_text(self._reply.text, failure.message))
            await self._settle_buttons()

        async def private() -> None:
            if partial:
                await self._reply.finish(partial + INCOMPLETE_NOTE)
                await self._settle_buttons()
            else:
                await self._reply.aclose()
            try:
                if not partial:
                    await self._interaction.delete_original_response()
                await self._interaction.followup.send(content=fit(error), ephemeral=True, allowed_mentions=NO_MENTIONS)
            except discord.HTTPException as refused:
                log.warning("Discord: ephemeral error failed (%s); editing the response instead", refused.status)
                await self._interaction.edit_original_response(content=fit(error), allowed_mentions=NO_MENTIONS)

        def public(place: Place) -> list[Message]:
            if partial:
                return [*self._plain(place, partial + INCOMPLETE_NOTE), Message(fit(error))]
            return self._plain(place, error)

        if failure.kind is FailureKind.STOPPED:
            def stopped_public(place: Place) -> list[Message]:
                return self._plain(place, stopped_text(self._reply.text, failure.message))

            await self._replies.deliver(Form(stopped, stopped_public), what="a stopped answer",
                                        if_lost="the user is not told")
            return
        await self._replies.deliver(Form(private, public), what="an error reply", if_lost="the user is not told")


def build_discord_adapter(settings: Settings, core: CommandCore, intake: CommandIntake) -> "DiscordAdapter | None":
    """The Discord adapter, when DISCORD_TOKEN is set."""
    return DiscordAdapter(core, settings.discord, intake) if settings.discord is not None else None
