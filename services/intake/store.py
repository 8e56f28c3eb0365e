"""SQL for intake's own tables: customers and their identifiers."""

import asyncpg


async def customer_exists(conn: asyncpg.Connection, customer_id: str) -> bool:
    return bool(await conn.fetchval("SELECT 1 FROM customers WHERE customer_id = $1", customer_id))


async def customer_by_identifier(conn: asyncpg.Connection, kind: str, value: str) -> str | None:
    result: str | None = await conn.fetchval(
        "SELECT customer_id FROM customer_identifiers WHERE kind = $1 AND value = $2", kind, value
    )
    return result


async def add_customer(
    conn: asyncpg.Connection, customer_id: str, identifiers: list[tuple[str, str]]
) -> None:
    """Raises UniqueViolationError if an identifier was claimed meanwhile (the caller retries)."""
    await conn.execute("INSERT INTO customers (customer_id) VALUES ($1)", customer_id)
    await conn.executemany(
        "INSERT INTO customer_identifiers (kind, value, customer_id) VALUES ($1, $2, $3)",
        [(kind, value, customer_id) for kind, value in identifiers],
    )
