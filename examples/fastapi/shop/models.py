"""The shop's tables (SQLAlchemy 2): products with their stock, and orders."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Product(Base):
    __tablename__ = "shop_products"

    sku: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str]
    price_cents: Mapped[int]
    stock: Mapped[int]


class Order(Base):
    __tablename__ = "shop_orders"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254))
    sku: Mapped[str] = mapped_column(ForeignKey(Product.sku))
    quantity: Mapped[int]
    total_cents: Mapped[int]
    # The id of the task that mails the confirmation: written in the order's own transaction.
    confirmation_task_id: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


CATALOGUE = [
    {"sku": "tea", "name": "Tea, 100 g", "price_cents": 650, "stock": 20},
    {"sku": "mug", "name": "Mug", "price_cents": 1200, "stock": 3},
]
"""What a new database is stocked with, so that the example runs as it is."""
