"""The incoming-message shape: what a platform tells the kit about one message or command."""

from __future__ import annotations

from dataclasses import dataclass

from aipersona.core import Identity


@dataclass(frozen=True)
class Incoming:
    """One message (or command) as the kit sees it, whatever the platform.

    A translator answers the platform's questions once, here: who wrote it (``identity``,
    by id, never by display name), in which chat (``chat_id``, which keys the session),
    what it says (``text``, without the mention of the bot), whether only the sender sees
    the chat (``private``: a DM, a private chat, an ephemeral slash command) and whether it
    is meant for the bot (``addressed``: a mention or a reply to the bot; a private message
    always is).

    ``media_only`` marks a message with a photo, sticker, file... and no words; ``album``
    names a group of such messages sent together (one answer per album). ``aliases`` are
    other ids the chat goes by in the settings' chat lists: a thread's parent channel, or
    a private chat's user id.
    """

    identity: Identity
    chat_id: str
    text: str = ""
    private: bool = False
    addressed: bool = False
    media_only: bool = False
    album: str | None = None
    aliases: tuple[str, ...] = ()

    @property
    def chat_ids(self) -> tuple[str, ...]:
        """The chat's id and its aliases (what ``allowed_chats``/``reply_channels`` match)."""
        return (self.chat_id, *self.aliases)

    @property
    def speaker(self) -> tuple[str, str]:
        """One speaker in one chat: the key that keeps their turns in order."""
        return self.chat_id, self.identity.user_id
