"""What every HTTP router shares: response declarations for the OpenAPI, input checks."""
