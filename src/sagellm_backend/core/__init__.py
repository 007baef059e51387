"""The one shared provider implementation and its bookkeeping parts."""
