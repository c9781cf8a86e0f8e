"""The HTTP side: the API client, its rate limiter, paging through the list, progress details."""
