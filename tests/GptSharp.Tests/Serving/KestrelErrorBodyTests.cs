using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using GptSharp.Serving;

namespace GptSharp.Tests.Serving;

/// <summary>
/// The answers Kestrel writes itself, before the application sees a request (issue 25, item 10): broken framing and an
/// unsupported HTTP version get OpenAI's error JSON with a matching Content-Length, over raw sockets (no HTTP client
/// sends such requests); a HEAD request keeps its bodiless answer; a connection that answered well-formed requests
/// first still gets the body, and streamed answers pass through unchanged.
/// </summary>
[Collection(ServingCollection.Name)]
public class KestrelErrorBodyTests(ServingFixture server)
{
    public static TheoryData<string, int, string> Broken => new()
    {
        { "GARBAGE\r\n\r\n", 400, "invalid_http_request" },
        { "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nNo colon here\r\n\r\n", 400, "invalid_http_request" },
        { "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400, "invalid_http_request" },
        { "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n{}\r\n0\r\n\r\n", 400, "invalid_http_request" },
        { "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}XX0\r\n\r\n", 400, "invalid_http_request" },
        { "GET /health HTTP/1.7\r\nHost: 127.0.0.1\r\n\r\n", 505, "http_version_not_supported" },
    };

    [Theory]
    [MemberData(nameof(Broken))]
    public async Task KestrelsOwnErrorsCarryOpenAisErrorBody(string request, int status, string code)
    {
        var answer = await ExchangeAsync(request);
        Assert.True(answer.Status == status, $"expected {status}, got: {answer.Raw}");
        Assert.Equal("application/json", answer.Header("Content-Type"));
        if (answer.Header("Transfer-Encoding") is null) Assert.Equal(Encoding.UTF8.GetByteCount(answer.Body).ToString(), answer.Header("Content-Length"));
        var error = JsonDocument.Parse(answer.Body).RootElement.GetProperty("error");
        Assert.Equal(status >= 500 ? "server_error" : "invalid_request_error", error.GetProperty("type").GetString());
        Assert.Equal(code, error.GetProperty("code").GetString());
        Assert.False(string.IsNullOrWhiteSpace(error.GetProperty("message").GetString()));
    }

    [Fact]
    public async Task AHeadRequestKeepsItsBodilessAnswer()
    {
        var answer = await ExchangeAsync("HEAD /health HTTP/1.1\r\nHost: 127.0.0.1\r\nNo colon here\r\n\r\n");
        Assert.Equal(400, answer.Status);
        Assert.Equal("0", answer.Header("Content-Length"));
        Assert.Equal("", answer.Body);
    }

    [Fact]
    public async Task AfterWellFormedRequestsOnOneConnectionTheBrokenOneGetsItsBody()
    {
        // Two answered requests (one streamed, chunked) on the same connection, then a broken one.
        string completion = "{\"prompt\": \"Hello\", \"max_tokens\": 3, \"stream\": true}";
        var answer = await ExchangeAsync(
            "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" +
            $"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {completion.Length}\r\n\r\n{completion}" +
            "BROKEN\r\n\r\n");
        Assert.Equal(200, answer.Status);
        Assert.Contains("{\"status\":\"ok\"}", answer.Raw);
        Assert.Contains("data: [DONE]", answer.Raw);
        int last = answer.Raw.LastIndexOf("HTTP/1.1 400 ", StringComparison.Ordinal);
        Assert.True(last > answer.Raw.IndexOf("data: [DONE]", StringComparison.Ordinal), answer.Raw);
        var tail = Parse(answer.Raw[last..]);
        Assert.Equal("invalid_http_request", JsonDocument.Parse(tail.Body).RootElement.GetProperty("error").GetProperty("code").GetString());
    }

    [Fact]
    public void OnlyAnExactBodilessErrorHeadIsRewritten()
    {
        static byte[] Bytes(string s) => Encoding.ASCII.GetBytes(s);
        Assert.NotNull(KestrelErrorBodies.WithErrorBody(Bytes("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")));
        // A success, a body already there, a head not yet complete, a chunked answer: passed on as they are.
        Assert.Null(KestrelErrorBodies.WithErrorBody(Bytes("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")));
        Assert.Null(KestrelErrorBodies.WithErrorBody(Bytes("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\nextra")));
        Assert.Null(KestrelErrorBodies.WithErrorBody(Bytes("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n")));
        Assert.Null(KestrelErrorBodies.WithErrorBody(Bytes("HTTP/1.1 404 Not Found\r\nContent-Length: 12\r\n\r\n")));
        Assert.Null(KestrelErrorBodies.WithErrorBody(Bytes("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n")));
        Assert.Null(KestrelErrorBodies.WithErrorBody(Bytes("0\r\n\r\n")));
    }

    private sealed record Answer(int Status, Dictionary<string, string> Headers, string Body, string Raw)
    {
        public string? Header(string name) => Headers.TryGetValue(name, out var value) ? value : null;
    }

    /// <summary>Sends <paramref name="request"/> as is and reads until the server closes the connection.</summary>
    private async Task<Answer> ExchangeAsync(string request)
    {
        using var socket = new TcpClient();
        await socket.ConnectAsync(server.Server.Address.Host, server.Server.Address.Port);
        var stream = socket.GetStream();
        await stream.WriteAsync(Encoding.ASCII.GetBytes(request));
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        var received = new MemoryStream();
        var buffer = new byte[4096];
        try
        {
            int read;
            while ((read = await stream.ReadAsync(buffer, timeout.Token)) > 0) received.Write(buffer, 0, read);
        }
        catch (IOException) { } // reset after the answer: the bytes read so far are the answer
        return Parse(Encoding.UTF8.GetString(received.ToArray()));
    }

    /// <summary>The first response in <paramref name="raw"/>: its status, headers and Content-Length body.</summary>
    private static Answer Parse(string raw)
    {
        int end = raw.IndexOf("\r\n\r\n", StringComparison.Ordinal);
        Assert.True(end > 0, $"no complete response head in: {raw}");
        var lines = raw[..end].Split("\r\n");
        int status = int.Parse(lines[0].Split(' ')[1]);
        var headers = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        foreach (var line in lines.Skip(1))
        {
            int colon = line.IndexOf(':');
            headers[line[..colon]] = line[(colon + 1)..].Trim();
        }
        string rest = raw[(end + 4)..];
        string body = headers.TryGetValue("Content-Length", out var length) ? rest[..Math.Min(rest.Length, int.Parse(length))] : "";
        if (headers.TryGetValue("Transfer-Encoding", out var coding) && coding == "chunked")
        {
            // The application's own answer (it read the broken body itself): chunks, each "size CRLF data CRLF".
            var text = new StringBuilder();
            for (int at = 0, size; (size = Convert.ToInt32(rest[at..rest.IndexOf("\r\n", at, StringComparison.Ordinal)], 16)) > 0; )
            {
                at = rest.IndexOf("\r\n", at, StringComparison.Ordinal) + 2;
                text.Append(rest, at, size);
                at += size + 2;
            }
            body = text.ToString();
        }
        return new Answer(status, headers, body, raw);
    }
}
