"""A FastAPI backend for the Vercel AI SDK's ``useChat({ resume: true })``."""
