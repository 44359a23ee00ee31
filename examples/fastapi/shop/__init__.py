"""A small shop: a FastAPI app (``shop.web``) that takes orders and sends their confirmation
mails through horsies, and the tasks a worker runs (``shop.tasks``)."""
