"""Access policy: grants and the decision "may this citizen open this door now?"."""
