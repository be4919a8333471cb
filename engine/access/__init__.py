"""Who may read or write what: API keys with scopes, their store, and the routes' guard."""
