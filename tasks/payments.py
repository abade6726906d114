"""Celery tasks for M-Pesa: thin shells around app.finance.mpesa."""

from celery import shared_task

from app.core.locks import run_locked
from app.finance import mpesa

SETTLE_LOCK_SECONDS = 300


@shared_task(name="tasks.payments.settle_stk_requests")
def settle_stk_requests():
    """Every minute: STK query for pushes pending longer than MPESA_STK_SETTLE_AFTER."""
    return run_locked("mpesa_settle", SETTLE_LOCK_SECONDS, mpesa.settle_pending)
