"""Faithful fakes of external HTTP/gRPC APIs (Google Calendar + OAuth, Secret Manager), served for real."""
