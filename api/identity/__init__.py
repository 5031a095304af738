"""Who is calling: users, bearer-token verification, the development identity provider."""
