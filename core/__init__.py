"""aipersona's public face: everything plugins, adapters, the bench and host bots use.

Anything not listed in ``__all__`` is internal and may change between releases::

    from aipersona.core import PersonaCore, Config, Identity, hookimpl, FieldSpec, Tool
"""

from importlib.metadata import PackageNotFoundError, version

from .chatbot import build_system_prompt
from .config import Config, LLMSettings
from .edits import Change, Edit, Rejected
from .engine import PersonaCore, PluginInfo, freeze_startup_objects
from .errors import (
    AipersonaError,
    ConfigError,
    DatabaseTooNew,
    FieldValidationError,
    LLMError,
    LocalModelError,
    MigrationError,
    NotAnAipersonaDatabase,
    PersonaNotFound,
    PluginError,
    StorageError,
    StructuredOutputError,
)
from .hooks import PluginHost, hookimpl
from .insights import (
    LOG_FILTERS,
    BadQuery,
    IdentityRow,
    LinkedIdentity,
    LogEntry,
    OverviewData,
    PersonaDetail,
    PersonaPage,
    PersonaQuery,
    SessionRow,
    UpdateLog,
    UpdateRow,
)
from .llm import Completion, LLMClient, StreamEvent
from .local_model import MODEL_ALIAS as LOCAL_MODEL_ALIAS
from .local_model import LocalModelServer
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .metrics import Metrics
from .operator import Operator, PluginReport
from .schema import FieldSpec, PersonaSchema, clean_text, flatten, nest
from .tools import Tool, ToolContext
from .types import HistoryEntry, Identity, Persona, Reply, ToolResult, Usage

try:
    __version__ = version("aipersona")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = [
    "LOCAL_MODEL_ALIAS",
    "LOG_FILTERS",
    "METRICS_CONTENT_TYPE",
    "AipersonaError",
    "BadQuery",
    "Change",
    "Completion",
    "Config",
    "ConfigError",
    "DatabaseTooNew",
    "Edit",
    "FieldSpec",
    "FieldValidationError",
    "HistoryEntry",
    "Identity",
    "IdentityRow",
    "LLMClient",
    "LLMError",
    "LLMSettings",
    "LinkedIdentity",
    "LocalModelError",
    "LocalModelServer",
    "LogEntry",
    "Metrics",
    "MigrationError",
    "NotAnAipersonaDatabase",
    "Operator",
    "OverviewData",
    "Persona",
    "PersonaCore",
    "PersonaDetail",
    "PersonaNotFound",
    "PersonaPage",
    "PersonaQuery",
    "PersonaSchema",
    "PluginError",
    "PluginHost",
    "PluginInfo",
    "PluginReport",
    "Rejected",
    "Reply",
    "SessionRow",
    "StorageError",
    "StreamEvent",
    "StructuredOutputError",
    "Tool",
    "ToolContext",
    "ToolResult",
    "UpdateLog",
    "UpdateRow",
    "Usage",
    "__version__",
    "build_system_prompt",
    "clean_text",
    "flatten",
    "freeze_startup_objects",
    "hookimpl",
    "nest",
]
