using System.Collections.Concurrent;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using GptSharp.Generation;
using GptSharp.Model;
using GptSharp.Serving;
using GptSharp.Tensors;
using Microsoft.Extensions.Logging;
using GptSharp.Randomness;

namespace GptSharp.Tests.Serving;

/// <summary>
/// Who may use the server (issue 25): the API key on every route, the Host allow-list against DNS rebinding, the
/// Origin check and CORS against other web pages, logged 5xx, the shared runs watcher and the connection limits.
/// Each test starts its own server on 127.0.0.1 at a free port over the tiny model.
/// </summary>
public sealed class ServerAccessTests : IAsyncLifetime
{
    private readonly GptModel _model = new(ServingFixture.Config, new FastRandom(11));
    private readonly string _runs = Path.Combine(Path.GetTempPath(), "gptsharp-access-" + Guid.NewGuid().ToString("N"));
    private BatchScheduler _scheduler = null!;

    public Task InitializeAsync()
    {
        _scheduler = new BatchScheduler(_model, maxBatchSize: 4, maxQueueLength: 16);
        Directory.CreateDirectory(Path.Combine(_runs, "run1"));
        File.WriteAllText(Path.Combine(_runs, "run1", "metrics.csv"), "step,epoch,tokens_seen,train_loss,val_loss,lr,tokens_per_s\n1,0,100,9.5,9.6,0.0004,1000\n");
        return Task.CompletedTask;
    }

    public Task DisposeAsync()
    {
        _scheduler.Dispose();
        _model.Dispose();
        Directory.Delete(_runs, recursive: true);
        return Task.CompletedTask;
    }

    private async Task<GptServer> StartAsync(ServerOptions options)
    {
        var started = GptServer.Create(_scheduler, options with { Port = 0, RunsDirectory = options.RunsDirectory ?? _runs });
        await started.StartAsync();
        return started;
    }

    /// <summary>Status of one request; a streamed answer is not read past its headers.</summary>
    private static async Task<(int Status, HttpResponseMessage Response)> SendAsync(HttpClient client, HttpMethod method, string path,
        Action<HttpRequestMessage>? setup = null, string? body = null, string contentType = "application/json")
    {
        var request = new HttpRequestMessage(method, path);
        if (body is not null) request.Content = new StringContent(body, Encoding.UTF8, contentType);
        setup?.Invoke(request);
        var response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        return ((int)response.StatusCode, response);
    }

    private static readonly (string Method, string Path, string? Body)[] Routes =
    [
        ("GET", "/", null), ("GET", "/runs", null), ("GET", "/runs/events", null), ("GET", "/v1/models", null), ("GET", "/v1/models/gptsharp", null),
        ("POST", "/v1/completions", "{\"prompt\": \"Hi\", \"max_tokens\": 1}"),
        ("POST", "/v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}], \"max_tokens\": 1}"),
        ("GET", "/no/such/path", null),
    ];

    [Fact]
    public async Task TheApiKeyGuardsEveryRouteButHealth()
    {
        await using var guarded = await StartAsync(new ServerOptions { ApiKey = "s3cret" });
        // No cookie jar: each request carries only what the test gives it.
        using var client = new HttpClient(new HttpClientHandler { UseCookies = false }) { BaseAddress = guarded.Address, Timeout = TimeSpan.FromSeconds(30) };
        string?[] wrong = [null, "Bearer wrong", "Bearer s3cre", "Bearer s3cret2", "Basic s3cret", "s3cret", "Bearer"];
        string[] right = ["Bearer s3cret", "bearer s3cret", "BEARER   s3cret"];
        foreach (var (method, path, body) in Routes)
        {
            foreach (string? authorization in wrong)
            {
                var (status, response) = await SendAsync(client, new HttpMethod(method), path, r => { if (authorization is not null) r.Headers.TryAddWithoutValidation("Authorization", authorization); }, body);
                using (response) Assert.True(status == 401, $"{method} {path} with \"{authorization}\": {status}");
            }
            foreach (string authorization in right)
            {
                var (status, response) = await SendAsync(client, new HttpMethod(method), path, r => r.Headers.TryAddWithoutValidation("Authorization", authorization), body);
                using (response) Assert.True(status == (path == "/no/such/path" ? 404 : 200), $"{method} {path} with \"{authorization}\": {status}");
            }
        }
        // /health needs no key and tells nothing else.
        var (healthStatus, health) = await SendAsync(client, HttpMethod.Get, "/health");
        using (health) Assert.Equal((200, "{\"status\":\"ok\"}"), (healthStatus, await health.Content.ReadAsStringAsync()));

        // The event stream takes the key as a query parameter (EventSource cannot send headers); POST never does.
        var (events, eventsResponse) = await SendAsync(client, HttpMethod.Get, "/runs/events?api_key=s3cret");
        using (eventsResponse) Assert.Equal(200, events);
        var (wrongQuery, wrongQueryResponse) = await SendAsync(client, HttpMethod.Get, "/runs/events?api_key=nope");
        using (wrongQueryResponse) Assert.Equal(401, wrongQuery);
        var (postQuery, postQueryResponse) = await SendAsync(client, HttpMethod.Post, "/v1/completions?api_key=s3cret", body: "{\"prompt\": \"Hi\", \"max_tokens\": 1}");
        using (postQueryResponse) Assert.Equal(401, postQuery);

        // A page opened with ?api_key= keeps the key in an HttpOnly SameSite cookie and drops it from the address.
        using var browser = new HttpClient(new HttpClientHandler { AllowAutoRedirect = false, UseCookies = false }) { BaseAddress = guarded.Address };
        var (login, loginResponse) = await SendAsync(browser, HttpMethod.Get, "/runs?api_key=s3cret");
        using (loginResponse)
        {
            Assert.Equal(303, login);
            Assert.Equal("/runs", loginResponse.Headers.Location!.OriginalString);
            string cookie = loginResponse.Headers.GetValues("Set-Cookie").Single();
            Assert.Contains("httponly", cookie, StringComparison.OrdinalIgnoreCase);
            Assert.Contains("samesite=strict", cookie, StringComparison.OrdinalIgnoreCase);
            string pair = cookie.Split(';')[0];
            foreach (var (method, path, body) in Routes.Where(r => r.Path != "/no/such/path"))
            {
                var (status, response) = await SendAsync(browser, new HttpMethod(method), path, r => r.Headers.Add("Cookie", pair), body);
                using (response) Assert.True(status == 200, $"{method} {path} with the cookie: {status}");
            }
        }
        // Without it a page is a login form, not the page.
        var (page, pageResponse) = await SendAsync(browser, HttpMethod.Get, "/");
        using (pageResponse)
        {
            Assert.Equal(401, page);
            Assert.Contains("name=\"api_key\"", await pageResponse.Content.ReadAsStringAsync());
        }
    }

    [Fact]
    public async Task OnlyTheServersOwnHostNamesAreAnswered()
    {
        await using var open = await StartAsync(new ServerOptions { AllowedHosts = ["models.lan"] });
        using var client = new HttpClient { BaseAddress = open.Address };
        int port = open.Address.Port;
        foreach (string host in (string[])[$"evil.example:{port}", "evil.example", $"127.0.0.1.evil.example:{port}", $"localhost.evil.example:{port}", $"10.0.0.8:{port}"])
        {
            foreach (string path in (string[])["/runs/events", "/v1/models", "/", "/health"])
            {
                var (status, response) = await SendAsync(client, HttpMethod.Get, path, r => r.Headers.Host = host);
                using (response)
                {
                    Assert.True(status == 403, $"Host {host} {path}: {status}");
                    Assert.Equal("host_not_allowed", JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.GetProperty("error").GetProperty("code").GetString());
                }
            }
        }
        foreach (string host in (string[])[$"127.0.0.1:{port}", $"localhost:{port}", "LOCALHOST", $"app.localhost:{port}", $"models.lan:{port}", $"[::1]:{port}"])
        {
            var (status, response) = await SendAsync(client, HttpMethod.Get, "/v1/models", r => r.Headers.Host = host);
            using (response) Assert.True(status == 200, $"Host {host}: {status}");
        }

        // An absolute-form target naming another host does not get past the check either.
        foreach (string target in (string[])["http://evil.example/runs/events", $"http://evil.example:{port}/v1/models"])
        {
            string answer = await RawAsync(open.Address, $"GET {target} HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n");
            Assert.True(answer.StartsWith("HTTP/1.1 403") || answer.StartsWith("HTTP/1.1 400"), $"{target}: {answer.Split('\n')[0]}");
            Assert.DoesNotContain("event: run", answer);
        }
    }

    [Fact]
    public async Task OtherOriginsAreRefusedUnlessAllowedAndThenGetCors()
    {
        await using var open = await StartAsync(new ServerOptions { CorsOrigins = ["http://app.example:3000"] });
        using var client = new HttpClient { BaseAddress = open.Address };
        long stepsBefore = _scheduler.Steps;
        // What any web page can send without a preflight: text/plain and form posts, from another origin.
        foreach (var (body, type) in new[] { ("{\"prompt\": \"Hi\", \"max_tokens\": 50}", "text/plain"), ("prompt=Hi", "application/x-www-form-urlencoded") })
        {
            foreach (string origin in (string[])["http://evil.example", "null", "http://app.example:3001", "https://app.example:3000"])
            {
                var (status, response) = await SendAsync(client, HttpMethod.Post, "/v1/completions", r => r.Headers.Add("Origin", origin), body, type);
                using (response)
                {
                    Assert.True(status == 403, $"Origin {origin} ({type}): {status}");
                    Assert.False(response.Headers.Contains("Access-Control-Allow-Origin"));
                }
            }
        }
        Assert.Equal(stepsBefore, _scheduler.Steps); // no work was done for them
        // A refused preflight.
        var (refused, refusedResponse) = await SendAsync(client, HttpMethod.Options, "/v1/chat/completions", r =>
        {
            r.Headers.Add("Origin", "http://evil.example");
            r.Headers.Add("Access-Control-Request-Method", "POST");
        });
        using (refusedResponse) Assert.Equal(403, refused);

        // The page's own origin is not cross-origin.
        string self = open.Address.GetLeftPart(UriPartial.Authority);
        var (same, sameResponse) = await SendAsync(client, HttpMethod.Post, "/v1/completions", r => r.Headers.Add("Origin", self), "{\"prompt\": \"Hi\", \"max_tokens\": 1}");
        using (sameResponse) Assert.Equal(200, same);

        // The allowed origin: its preflight is answered, its requests get the CORS headers.
        var (preflight, preflightResponse) = await SendAsync(client, HttpMethod.Options, "/v1/chat/completions", r =>
        {
            r.Headers.Add("Origin", "http://app.example:3000");
            r.Headers.Add("Access-Control-Request-Method", "POST");
            r.Headers.Add("Access-Control-Request-Headers", "authorization, content-type");
        });
        using (preflightResponse)
        {
            Assert.Equal(204, preflight);
            Assert.Equal("http://app.example:3000", preflightResponse.Headers.GetValues("Access-Control-Allow-Origin").Single());
            Assert.Contains("POST", preflightResponse.Headers.GetValues("Access-Control-Allow-Methods").Single());
            Assert.Contains("authorization", preflightResponse.Headers.GetValues("Access-Control-Allow-Headers").Single(), StringComparison.OrdinalIgnoreCase);
            Assert.Contains("Origin", preflightResponse.Headers.Vary);
        }
        var (allowed, allowedResponse) = await SendAsync(client, HttpMethod.Post, "/v1/completions", r => r.Headers.Add("Origin", "http://app.example:3000"), "{\"prompt\": \"Hi\", \"max_tokens\": 1}");
        using (allowedResponse)
        {
            Assert.Equal(200, allowed);
            Assert.Equal("http://app.example:3000", allowedResponse.Headers.GetValues("Access-Control-Allow-Origin").Single());
        }
        await Assert.ThrowsAsync<ArgumentException>(() => StartAsync(new ServerOptions { CorsOrigins = ["app.example/path"] }));
    }

    [Fact]
    public async Task A500IsLoggedWithItsExceptionAndRequestIdAndTellsTheClientNothingInternal()
    {
        // A model whose output head is NaN: sampling fails inside the server, which is the server's fault (500).
        using var broken = new GptModel(ServingFixture.Config, new FastRandom(11));
        broken.OutHead.Value.Span.Fill(float.NaN);
        using var scheduler = new BatchScheduler(broken, maxBatchSize: 2, maxQueueLength: 4);
        var log = new CapturingLogger();
        await using var failing = GptServer.Create(scheduler, new ServerOptions { Port = 0, LoggerProvider = log });
        await failing.StartAsync();
        using var client = new HttpClient { BaseAddress = failing.Address };
        for (int i = 0; i < 3; i++)
        {
            var (status, response) = await SendAsync(client, HttpMethod.Post, "/v1/completions", body: "{\"prompt\": \"Hi\", \"max_tokens\": 3, \"temperature\": 1}");
            using (response)
            {
                Assert.Equal(500, status);
                string id = response.Headers.GetValues("X-Request-Id").Single();
                var error = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.GetProperty("error");
                Assert.Equal("server_error", error.GetProperty("type").GetString());
                string message = error.GetProperty("message").GetString()!;
                Assert.Contains(id, message);
                Assert.DoesNotContain("Multinomial", message);
                Assert.DoesNotContain("nan", message, StringComparison.OrdinalIgnoreCase);
                var entry = Assert.Single(log.Entries, e => e.Message.Contains(id));
                Assert.Equal(LogLevel.Error, entry.Level);
                Assert.NotNull(entry.Exception);
                Assert.Contains("generation failed", entry.Exception!.Message);
            }
        }
        Assert.Equal(3, log.Entries.Count(e => e.Level == LogLevel.Error));
    }

    [Fact]
    public async Task EveryRunsListenerIsServedByOneWatcher()
    {
        await using var open = await StartAsync(new ServerOptions { RunsPollInterval = TimeSpan.FromMilliseconds(100) });
        using var client = new HttpClient { BaseAddress = open.Address, Timeout = Timeout.InfiniteTimeSpan };
        var dashboard = open.Dashboard;
        var listeners = new List<(HttpResponseMessage Response, StreamReader Reader)>();
        for (int i = 0; i < 6; i++)
        {
            var (status, response) = await SendAsync(client, HttpMethod.Get, "/runs/events");
            Assert.Equal(200, status);
            listeners.Add((response, new StreamReader(await response.Content.ReadAsStreamAsync())));
        }
        // Every listener, early or late, receives the run in full.
        foreach (var (_, reader) in listeners)
        {
            string? line;
            while ((line = await reader.ReadLineAsync()) is not null && !line.StartsWith("data: {")) { }
            var run = JsonDocument.Parse(line![6..]).RootElement;
            Assert.Equal("run1", run.GetProperty("name").GetString());
            Assert.True(run.GetProperty("reset").GetBoolean());
            Assert.Equal(1, run.GetProperty("rows").GetArrayLength());
        }
        long before = Interlocked.Read(ref dashboard.Polls);
        await Task.Delay(1000);
        long polls = Interlocked.Read(ref dashboard.Polls) - before;
        // One watcher at 10 polls/s: one listener's worth, not six.
        Assert.InRange(polls, 1, 20);
        // A new row reaches every listener.
        File.AppendAllText(Path.Combine(_runs, "run1", "metrics.csv"), "2,0,200,9.0,9.1,0.0004,1000\n");
        foreach (var (_, reader) in listeners)
        {
            string? line;
            while ((line = await reader.ReadLineAsync()) is not null && !line.StartsWith("data: {")) { }
            var rows = JsonDocument.Parse(line![6..]).RootElement.GetProperty("rows");
            Assert.Equal(200, rows[0][2].GetInt32());
        }
        foreach (var (response, reader) in listeners) { reader.Dispose(); response.Dispose(); }
        // Nobody listens: the watcher stops (once the server has seen the connections go, within a few polls).
        long stopped = -1;
        for (int wait = 0; wait < 20 && stopped != Interlocked.Read(ref dashboard.Polls); wait++)
        {
            stopped = Interlocked.Read(ref dashboard.Polls);
            await Task.Delay(400);
        }
        Assert.Equal(stopped, Interlocked.Read(ref dashboard.Polls));
    }

    [Fact]
    public async Task SilentConnectionsAreCutAndTheirNumberIsBounded()
    {
        await using var open = await StartAsync(new ServerOptions { MaxConnections = 3, HeadersTimeout = TimeSpan.FromSeconds(1), IdleTimeout = TimeSpan.FromSeconds(1) });
        var silent = new List<TcpClient>();
        for (int i = 0; i < 3; i++)
        {
            var socket = new TcpClient();
            await socket.ConnectAsync(open.Address.Host, open.Address.Port);
            silent.Add(socket);
        }
        // Over the limit: this one is closed without an answer.
        using (var extra = new TcpClient())
        {
            await extra.ConnectAsync(open.Address.Host, open.Address.Port);
            var stream = extra.GetStream();
            await stream.WriteAsync(Encoding.ASCII.GetBytes("GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"));
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
            int read = await ReadAllAsync(stream, timeout.Token);
            Assert.Equal(0, read);
        }
        // The silent ones are cut within the timeouts (Kestrel checks once a second).
        var cut = System.Diagnostics.Stopwatch.StartNew();
        foreach (var socket in silent)
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(15));
            Assert.Equal(0, await ReadAllAsync(socket.GetStream(), timeout.Token));
            socket.Dispose();
        }
        Assert.True(cut.Elapsed < TimeSpan.FromSeconds(10), $"silent connections held {cut.Elapsed.TotalSeconds:F1} s");
        // And the server answers again.
        using var client = new HttpClient { BaseAddress = open.Address };
        Assert.Equal(200, (int)(await client.GetAsync("/health")).StatusCode);
    }

    /// <summary>Bytes read until the server closes the connection (0 = closed without a byte).</summary>
    private static async Task<int> ReadAllAsync(NetworkStream stream, CancellationToken cancellation)
    {
        var buffer = new byte[4096];
        int total = 0, read;
        try
        {
            while ((read = await stream.ReadAsync(buffer, cancellation)) > 0) total += read;
        }
        catch (IOException) { } // reset by the server: closed too
        return total;
    }

    private static async Task<string> RawAsync(Uri address, string request)
    {
        using var socket = new TcpClient();
        await socket.ConnectAsync(address.Host, address.Port);
        var stream = socket.GetStream();
        await stream.WriteAsync(Encoding.ASCII.GetBytes(request));
        using var reader = new StreamReader(stream);
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        var text = new StringBuilder();
        var buffer = new char[4096];
        try
        {
            int read;
            while ((read = await reader.ReadAsync(buffer, timeout.Token)) > 0)
            {
                text.Append(buffer, 0, read);
                if (text.ToString().Contains("event: run")) break;
            }
        }
        catch (OperationCanceledException) { }
        catch (IOException) { }
        return text.ToString();
    }

    private sealed class CapturingLogger : ILoggerProvider, ILogger
    {
        public ConcurrentQueue<(LogLevel Level, string Message, Exception? Exception)> Entries { get; } = new();
        public ILogger CreateLogger(string categoryName) => this;
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
        public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Warning;
        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (IsEnabled(logLevel)) Entries.Enqueue((logLevel, formatter(state, exception), exception));
        }
        public void Dispose() { }
    }
}
