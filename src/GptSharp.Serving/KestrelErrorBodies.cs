using System.Buffers;
using System.IO.Pipelines;
using System.Text;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Http;

namespace GptSharp.Serving;

/// <summary>
/// Gives OpenAI's error JSON to the answers Kestrel writes itself, without calling the application: a malformed
/// request line or header, broken chunked framing it meets before the application reads, an HTTP version it does not
/// speak (505), its own size limits and timeouts. Kestrel writes those as a bare head with <c>Content-Length: 0</c> and
/// closes the connection.
/// </summary>
/// <remarks>
/// A connection middleware on the listener: it sees the bytes Kestrel writes to the socket. While the application
/// handles a request the writes pass straight through (a streamed completion costs nothing more). Between requests —
/// on a new connection, and from the moment a response is complete (<see cref="HttpResponse.OnCompleted(Func{Task})"/>)
/// until the application starts the next one — nothing the application wrote can arrive, so what Kestrel writes then
/// is held until its flush; when it is exactly a bodiless error head (status ≥ 400, <c>Content-Length: 0</c>, nothing
/// after the head), the head is given the JSON body's length and type and the body follows. Anything else is passed on
/// unchanged. A request whose first bytes are <c>HEAD </c> keeps the bodiless answer (a response to HEAD has no body).
/// </remarks>
internal static class KestrelErrorBodies
{
    /// <summary>The middleware to add to a listener (<c>listenOptions.Use(...)</c>).</summary>
    public static ConnectionDelegate Middleware(ConnectionDelegate next) => async connection =>
    {
        var state = new ConnectionState();
        connection.Features.Set(state);
        var transport = connection.Transport;
        connection.Transport = new Pipe(new Reader(transport.Input, state), new Writer(transport.Output, state));
        try
        {
            await next(connection);
        }
        finally
        {
            connection.Transport = transport;
        }
    };

    /// <summary>Called by the application's first middleware on each request: its response passes straight through.</summary>
    public static void RequestStarted(HttpContext context)
    {
        if (context.Features.Get<ConnectionState>() is not { } state) return;
        state.BetweenRequests = false;
        context.Response.OnCompleted(static s =>
        {
            var state = (ConnectionState)s;
            state.AtRequestStart = true;
            state.BetweenRequests = true;
            return Task.CompletedTask;
        }, state);
    }

    /// <summary>What the connection's reader and writer share (one connection: one request at a time).</summary>
    private sealed class ConnectionState
    {
        public volatile bool BetweenRequests = true;
        // The next bytes read start a request: its method is noted (HEAD answers carry no body).
        public volatile bool AtRequestStart = true;
        public volatile bool HeadRequest;
    }

    private sealed class Pipe(PipeReader input, PipeWriter output) : IDuplexPipe
    {
        public PipeReader Input { get; } = input;
        public PipeWriter Output { get; } = output;
    }

    /// <summary>Notes whether the request Kestrel is about to parse is a HEAD.</summary>
    private sealed class Reader(PipeReader inner, ConnectionState state) : PipeReader
    {
        public override async ValueTask<ReadResult> ReadAsync(CancellationToken cancellationToken = default) =>
            Note(await inner.ReadAsync(cancellationToken).ConfigureAwait(false));

        public override bool TryRead(out ReadResult result)
        {
            if (!inner.TryRead(out result)) return false;
            Note(result);
            return true;
        }

        private ReadResult Note(ReadResult result)
        {
            if (state.AtRequestStart && state.BetweenRequests && !result.Buffer.IsEmpty)
            {
                var buffer = result.Buffer;
                // Kestrel skips blank lines before a request line (RFC 9112 §2.2).
                var reader = new SequenceReader<byte>(buffer);
                reader.AdvancePastAny((byte)'\r', (byte)'\n');
                if (reader.Remaining >= 5 || result.IsCompleted)
                {
                    state.HeadRequest = reader.IsNext("HEAD "u8);
                    state.AtRequestStart = false;
                }
            }
            return result;
        }

        public override void AdvanceTo(SequencePosition consumed) => inner.AdvanceTo(consumed);
        public override void AdvanceTo(SequencePosition consumed, SequencePosition examined) => inner.AdvanceTo(consumed, examined);
        public override void CancelPendingRead() => inner.CancelPendingRead();
        public override void Complete(Exception? exception = null) => inner.Complete(exception);
        public override ValueTask CompleteAsync(Exception? exception = null) => inner.CompleteAsync(exception);
    }

    /// <summary>Passes the application's writes through; holds Kestrel's own between requests to give an error its body.</summary>
    private sealed class Writer(PipeWriter inner, ConnectionState state) : PipeWriter
    {
        // Bytes written between requests, not yet passed on; the buffer handed out last is ours when `_holding`.
        private readonly ArrayBufferWriter<byte> _held = new();
        private bool _holding;

        public override Memory<byte> GetMemory(int sizeHint = 0)
        {
            _holding = state.BetweenRequests || _held.WrittenCount > 0;
            return _holding ? _held.GetMemory(sizeHint) : inner.GetMemory(sizeHint);
        }

        public override Span<byte> GetSpan(int sizeHint = 0)
        {
            _holding = state.BetweenRequests || _held.WrittenCount > 0;
            return _holding ? _held.GetSpan(sizeHint) : inner.GetSpan(sizeHint);
        }

        public override void Advance(int bytes)
        {
            if (_holding) _held.Advance(bytes);
            else inner.Advance(bytes);
        }

        public override ValueTask<FlushResult> FlushAsync(CancellationToken cancellationToken = default)
        {
            PassOnHeld();
            return inner.FlushAsync(cancellationToken);
        }

        public override void Complete(Exception? exception = null)
        {
            PassOnHeld();
            inner.Complete(exception);
        }

        public override async ValueTask CompleteAsync(Exception? exception = null)
        {
            if (_held.WrittenCount > 0)
            {
                PassOnHeld();
                await inner.FlushAsync().ConfigureAwait(false);
            }
            await inner.CompleteAsync(exception).ConfigureAwait(false);
        }

        public override void CancelPendingFlush() => inner.CancelPendingFlush();
        public override bool CanGetUnflushedBytes => inner.CanGetUnflushedBytes;
        public override long UnflushedBytes => inner.UnflushedBytes + _held.WrittenCount;

        private void PassOnHeld()
        {
            if (_held.WrittenCount == 0) return;
            var bytes = _held.WrittenSpan;
            if (!state.HeadRequest && WithErrorBody(bytes) is { } answered) inner.Write(answered);
            else inner.Write(bytes);
            _held.ResetWrittenCount();
        }
    }

    /// <summary>
    /// <paramref name="response"/> with OpenAI's error body when it is exactly a bodiless HTTP/1.1 error head
    /// (status ≥ 400, <c>Content-Length: 0</c>, ending at the blank line); otherwise null.
    /// </summary>
    internal static byte[]? WithErrorBody(ReadOnlySpan<byte> response)
    {
        if (!response.StartsWith("HTTP/1.1 "u8) || response.Length < 16 || !response.EndsWith("\r\n\r\n"u8)) return null;
        if (response.IndexOf("\r\n\r\n"u8) != response.Length - 4) return null;
        int status = 0;
        for (int i = 9; i < 12; i++)
        {
            if (!char.IsAsciiDigit((char)response[i])) return null;
            status = status * 10 + (response[i] - '0');
        }
        if (status < 400 || response[12] != (byte)' ') return null;
        var head = Encoding.ASCII.GetString(response[..^2]);
        const string empty = "\r\nContent-Length: 0\r\n";
        int at = head.IndexOf(empty, StringComparison.OrdinalIgnoreCase);
        if (at < 0 || head.Contains("\r\nContent-Type:", StringComparison.OrdinalIgnoreCase)
                   || head.Contains("\r\nTransfer-Encoding:", StringComparison.OrdinalIgnoreCase)) return null;
        var (message, code) = Describe(status);
        byte[] body = ApiException.Json(status, message, null, code);
        string rewritten = head[..at] + $"\r\nContent-Type: application/json\r\nContent-Length: {body.Length}\r\n" + head[(at + empty.Length)..] + "\r\n";
        return [.. Encoding.ASCII.GetBytes(rewritten), .. body];
    }

    /// <summary>What Kestrel's own answer means, in the words a client can act on.</summary>
    private static (string Message, string? Code) Describe(int status) => status switch
    {
        400 => ("Bad request: the HTTP request is malformed (its request line, a header, or its chunked body framing); the server closed the connection.", "invalid_http_request"),
        408 => ("The request took too long to arrive: send its headers and body without pausing.", "request_timeout"),
        413 => ("The request body is larger than the server accepts.", "request_too_large"),
        414 => ("The request target (path and query) is longer than the server accepts.", "uri_too_long"),
        431 => ("The request headers are larger than the server accepts.", "headers_too_large"),
        505 => ("HTTP version not supported: send HTTP/1.1 (or HTTP/1.0) requests.", "http_version_not_supported"),
        _ => ($"HTTP {status}: the server refused the request before reading it.", null),
    };
}
