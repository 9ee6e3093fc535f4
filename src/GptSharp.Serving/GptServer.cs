using System.Net;
using System.Reflection;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using GptSharp.Generation;

namespace GptSharp.Serving;

/// <summary>What <c>gptsharp serve</c> listens on and allows.</summary>
public sealed record ServerOptions
{
    /// <summary>The address to bind: loopback unless told otherwise, so a model is not exposed by accident.</summary>
    public string Host { get; init; } = "127.0.0.1";
    /// <summary>The port (0 = any free port; <see cref="GptServer.Address"/> tells which).</summary>
    public int Port { get; init; } = 8000;
    /// <summary>
    /// When set, every request but <c>/health</c> needs the key: <c>Authorization: Bearer KEY</c>, or for the pages and
    /// <c>/runs/events</c> the <c>api_key</c> query parameter (kept afterwards in a cookie).
    /// </summary>
    public string? ApiKey { get; init; }
    /// <summary>Host names the server answers to besides localhost and the bind address (<c>*</c> = any, behind a proxy that checks).</summary>
    public IReadOnlyList<string> AllowedHosts { get; init; } = [];
    /// <summary>Origins (<c>https://app.example</c>, or <c>*</c>) whose pages may call the server; other cross-origin requests get 403.</summary>
    public IReadOnlyList<string> CorsOrigins { get; init; } = [];
    /// <summary>Most open connections; more are closed at once.</summary>
    public int MaxConnections { get; init; } = 1000;
    /// <summary>A connection must send its request headers within this long.</summary>
    public TimeSpan HeadersTimeout { get; init; } = TimeSpan.FromSeconds(10);
    /// <summary>An idle connection between requests (or one that never sends a byte) is closed after this long.</summary>
    public TimeSpan IdleTimeout { get; init; } = TimeSpan.FromSeconds(30);
    /// <summary>Another destination for the server's log (tests read it); errors (every 5xx) are logged at Error.</summary>
    public ILoggerProvider? LoggerProvider { get; init; }
    /// <summary>The folder of training runs shown at <c>/runs</c>.</summary>
    public string? RunsDirectory { get; init; }
    /// <summary>The name clients give as <c>model</c>.</summary>
    public string ModelId { get; init; } = GptChatClient.DefaultModelId;
    /// <summary>Larger request bodies are refused with 413.</summary>
    public long MaxRequestBodyBytes { get; init; } = 1 << 20;
    /// <summary>How often <c>/runs</c> looks at the runs' files.</summary>
    public TimeSpan RunsPollInterval { get; init; } = TimeSpan.FromSeconds(1);
    /// <summary>Log each request to the console (the CLI turns it on; tests keep it quiet).</summary>
    public bool LogRequests { get; init; }
}

/// <summary>
/// The HTTP server of <c>gptsharp serve</c> (Kestrel, minimal APIs): the OpenAI-compatible API, the playground at
/// <c>/</c> and the training dashboard at <c>/runs</c>, all over one <see cref="BatchScheduler"/>.
/// </summary>
public sealed class GptServer : IAsyncDisposable
{
    private readonly WebApplication _app;

    private GptServer(WebApplication app, RunsDashboard dashboard)
    {
        _app = app;
        Dashboard = dashboard;
    }

    /// <summary>The <c>/runs</c> watcher (tests count its polls).</summary>
    internal RunsDashboard Dashboard { get; }

    public static GptServer Create(BatchScheduler scheduler, ServerOptions options)
    {
        if (options.Port is < 0 or > 65535) throw new ArgumentException($"--port must be in 0..65535, got {options.Port}.");
        if (options.RunsDirectory is { } runs && !Directory.Exists(runs)) throw new ArgumentException($"--runs {runs}: no such directory.");
        if (options.ApiKey is "") throw new ArgumentException("--api-key is empty.");
        if (options.MaxConnections < 1) throw new ArgumentException($"--max-connections must be at least 1, got {options.MaxConnections}.");
        foreach (string origin in options.CorsOrigins)
            if (origin != "*" && !(Uri.TryCreate(origin, UriKind.Absolute, out var uri) && uri.Scheme is "http" or "https" && uri.AbsolutePath == "/" && uri.Query == ""))
                throw new ArgumentException($"--cors-origin must be an origin like https://app.example or http://localhost:3000 (or *), got \"{origin}\".");
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { ContentRootPath = AppContext.BaseDirectory });
        builder.Logging.ClearProviders();
        if (options.LogRequests) builder.Logging.AddSimpleConsole(o => o.SingleLine = true).SetMinimumLevel(LogLevel.Warning);
        if (options.LoggerProvider is { } provider) builder.Logging.AddProvider(provider);
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            kestrel.Limits.MaxRequestBodySize = options.MaxRequestBodyBytes;
            // Silent or idle connections are cut (Kestrel's keep-alive default holds them 130 s), and there is a ceiling.
            kestrel.Limits.MaxConcurrentConnections = options.MaxConnections;
            kestrel.Limits.RequestHeadersTimeout = options.HeadersTimeout;
            kestrel.Limits.KeepAliveTimeout = options.IdleTimeout;
            // Kestrel answers an over-long request line or header block itself, with an empty body. Its ceilings are set
            // above the server's own limits, which the first middleware checks and answers with OpenAI's error JSON.
            kestrel.Limits.MaxRequestLineSize = 8 * MaxRequestTargetBytes;
            kestrel.Limits.MaxRequestHeadersTotalSize = 2 * MaxRequestHeadersBytes;
            kestrel.AddServerHeader = false;
            // Kestrel's own error answers (malformed framing, 505) get OpenAI's error body too.
            if (options.Host == "localhost") kestrel.ListenLocalhost(options.Port, listen => listen.Use(KestrelErrorBodies.Middleware));
            else if (IPAddress.TryParse(options.Host, out var address)) kestrel.Listen(address, options.Port, listen => listen.Use(KestrelErrorBodies.Middleware));
            else throw new ArgumentException($"--host must be an IP address or localhost, got \"{options.Host}\".");
        });
        var app = builder.Build();
        var log = app.Services.GetRequiredService<ILoggerFactory>().CreateLogger("GptSharp.Serving");
        var policy = new AccessPolicy(options);
        app.Use(async (context, next) =>
        {
            KestrelErrorBodies.RequestStarted(context);
            context.Response.Headers["X-Request-Id"] = context.TraceIdentifier;
            try
            {
                if (await AdmitAsync(context, policy)) await next(context);
            }
            catch (Exception e)
            {
                await WriteErrorAsync(context, e, log);
            }
        });
        // Statuses the routing answers itself (404, 405) get OpenAI's error body too.
        app.UseStatusCodePages(async status =>
        {
            var context = status.HttpContext;
            string message = context.Response.StatusCode switch
            {
                404 => $"Unknown path {context.Request.Method} {context.Request.Path}: see GET /v1/models, POST /v1/completions, POST /v1/chat/completions, /health, / and /runs.",
                405 => $"{context.Request.Method} is not allowed on {context.Request.Path}.",
                _ => $"HTTP {context.Response.StatusCode}.",
            };
            await ApiException.WriteAsync(context, context.Response.StatusCode, message);
        });
        new OpenAiApi(scheduler, options.ModelId).Map(app);
        var dashboard = new RunsDashboard(options.RunsDirectory, options.RunsPollInterval);
        dashboard.Map(app);
        string[] getOrHead = [HttpMethods.Get, HttpMethods.Head];
        app.MapMethods("/", getOrHead, context => WritePageAsync(context, "index.html"));
        app.MapMethods("/runs", getOrHead, context => WritePageAsync(context, "runs.html"));
        // llama.cpp's convention: 200 once the model is loaded (it is before the server starts); no key, no data.
        app.MapMethods("/health", getOrHead, context => context.Response.WriteAsJsonAsync(new HealthStatus("ok"), HealthJson.Default.HealthStatus));
        return new GptServer(app, dashboard);
    }

    /// <summary>
    /// Applies the <see cref="AccessPolicy"/>: false when the request was answered here (refused, a CORS preflight, a
    /// login redirect), true when it goes on to its route.
    /// </summary>
    private static async Task<bool> AdmitAsync(HttpContext context, AccessPolicy policy)
    {
        var request = context.Request;
        int target = context.Features.Get<Microsoft.AspNetCore.Http.Features.IHttpRequestFeature>()?.RawTarget.Length ?? 0;
        if (target > MaxRequestTargetBytes)
            throw new ApiException(414, $"The request target is {target} bytes long, more than the {MaxRequestTargetBytes} this server accepts.", null, "uri_too_long");
        long headerBytes = 0;
        foreach (var (name, values) in request.Headers) headerBytes += name.Length + 4 + values.Sum(v => (long)(v?.Length ?? 0));
        if (headerBytes > MaxRequestHeadersBytes)
            throw new ApiException(431, $"The request headers are {headerBytes} bytes long, more than the {MaxRequestHeadersBytes} this server accepts.", null, "headers_too_large");
        if (!policy.HostAllowed(request))
            throw new ApiException(403, $"Host \"{request.Host}\" is not a name of this server (localhost, its bind address, --allowed-host names): start it with --allowed-host {request.Host.Host} to answer to it.", null, "host_not_allowed");
        string? origin = request.Headers.Origin;
        if (origin is not null && !AccessPolicy.IsSameOrigin(request, origin))
        {
            if (!policy.CorsAllowed(origin))
                throw new ApiException(403, $"Cross-origin request from {origin} refused: start the server with --cors-origin {origin} to let its pages call it.", null, "origin_not_allowed");
            var headers = context.Response.Headers;
            headers.AccessControlAllowOrigin = origin;
            headers.Vary = "Origin";
            headers.AccessControlExposeHeaders = "X-Request-Id";
            if (HttpMethods.IsOptions(request.Method) && request.Headers.ContainsKey("Access-Control-Request-Method"))
            {
                headers.AccessControlAllowMethods = "GET, HEAD, POST, OPTIONS";
                headers.AccessControlAllowHeaders = request.Headers.AccessControlRequestHeaders.Count > 0
                    ? request.Headers.AccessControlRequestHeaders.ToString() : "Authorization, Content-Type";
                headers.AccessControlMaxAge = "600";
                context.Response.StatusCode = 204;
                return false;
            }
        }
        if (HttpMethods.IsOptions(request.Method))
        {
            context.Response.Headers.Allow = "GET, HEAD, POST, OPTIONS";
            context.Response.StatusCode = 204;
            return false;
        }
        if (!policy.RequiresKey || request.Path == "/health") return true;
        string? key = AccessPolicy.PresentedKey(request, out bool fromQuery);
        bool page = request.Path == "/" || request.Path == "/runs";
        if (!policy.KeyMatches(key))
        {
            if (page)
            {
                context.Response.StatusCode = 401;
                context.Response.ContentType = "text/html; charset=utf-8";
                await context.Response.WriteAsync(LoginPage, context.RequestAborted);
                return false;
            }
            throw new ApiException(401, "Incorrect API key provided: pass it as `Authorization: Bearer KEY` (the server's --api-key), or for the pages and /runs/events as ?api_key=KEY.", null, "invalid_api_key");
        }
        if (fromQuery)
        {
            // Kept in a cookie the browser sends only to this server, and only from its own pages.
            context.Response.Cookies.Append(AccessPolicy.KeyCookie, key!, new CookieOptions { HttpOnly = true, SameSite = SameSiteMode.Strict, Path = "/", IsEssential = true });
            if (page)
            {
                // The key leaves the address bar (and the history) at once.
                context.Response.Redirect(request.PathBase + request.Path, permanent: false);
                context.Response.StatusCode = 303;
                return false;
            }
        }
        return true;
    }

    /// <summary>Longest request target (path and query) answered; longer ones get 414 (Kestrel's own default limit).</summary>
    private const int MaxRequestTargetBytes = 8 * 1024;

    /// <summary>Largest header block answered; larger ones get 431 (Kestrel's own default limit).</summary>
    private const int MaxRequestHeadersBytes = 32 * 1024;

    private const string LoginPage = """
        <!doctype html><html><head><meta charset="utf-8"><title>GptSharp: API key</title></head>
        <body style="font-family: sans-serif; max-width: 30em; margin: 4em auto">
        <p>This server was started with <code>--api-key</code>. Enter the key once; this browser keeps it in a cookie for this server.</p>
        <form method="get"><input type="password" name="api_key" autofocus required> <button>Open</button></form>
        </body></html>
        """;

    /// <summary>Where the server listens (after <see cref="StartAsync"/>), e.g. <c>http://127.0.0.1:8000/</c>.</summary>
    public Uri Address => new(_app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First() + "/");

    public Task StartAsync(CancellationToken cancellation = default) => _app.StartAsync(cancellation);

    /// <summary>Runs until Ctrl+C or SIGTERM.</summary>
    public Task WaitForShutdownAsync(CancellationToken cancellation = default) => Microsoft.Extensions.Hosting.HostingAbstractionsHostExtensions.WaitForShutdownAsync(_app, cancellation);

    public Task StopAsync() => _app.StopAsync();

    public async ValueTask DisposeAsync() => await _app.DisposeAsync();

    /// <summary>
    /// Bad input is a 4xx with OpenAI's error JSON, never a 500; a client that went away gets nothing. Once a stream
    /// has started, the error goes in an event instead.
    /// </summary>
    private static async Task WriteErrorAsync(HttpContext context, Exception e, ILogger log)
    {
        if (context.RequestAborted.IsCancellationRequested) return;
        var (status, message, param, code) = e switch
        {
            ApiException api => (api.Status, api.Message, (string?)api.Param, (string?)api.Code),
            // The body's framing broke while the route read it: the same codes as Kestrel's own answers (KestrelErrorBodies).
            BadHttpRequestException bad => (bad.StatusCode, bad.StatusCode == 413
                ? "The request body is larger than the server accepts." : $"Bad request: {bad.Message}", (string?)null,
                bad.StatusCode switch { 413 => "request_too_large", 408 => "request_timeout", 400 => "invalid_http_request", _ => (string?)null }),
            QueueFullException full => (429, full.Message, (string?)null, (string?)"queue_full"),
            ArgumentException bad => (400, bad.Message, (string?)null, (string?)"invalid_value"),
            // What went wrong inside stays in the log; the client gets the request id to quote.
            _ => (500, $"The server failed on this request (request id {context.TraceIdentifier}); its log has the details.", (string?)null, (string?)null),
        };
        if (status >= 500)
            log.LogError(e, "HTTP {Status} on {Method} {Path} (request id {RequestId})", status, context.Request.Method, context.Request.Path.Value, context.TraceIdentifier);
        if (!context.Response.HasStarted)
        {
            await ApiException.WriteAsync(context, status, message, param, code);
            return;
        }
        try
        {
            // JsonEncodedText, not JsonSerializer: a trimmed build has no reflection-based serializer, even for a string.
            string json = "\"" + System.Text.Json.JsonEncodedText.Encode(message).ToString() + "\"";
            await context.Response.WriteAsync($"data: {{\"error\": {{\"message\": {json}, \"type\": \"{ApiException.TypeOf(status)}\"}}}}\n\n");
        }
        catch (Exception) when (context.RequestAborted.IsCancellationRequested) { }
    }

    private static async Task WritePageAsync(HttpContext context, string name)
    {
        await using var page = Assembly.GetExecutingAssembly().GetManifestResourceStream("wwwroot/" + name)
            ?? throw new InvalidOperationException($"the page {name} is missing from the assembly.");
        context.Response.ContentType = "text/html; charset=utf-8";
        await page.CopyToAsync(context.Response.Body, context.RequestAborted);
    }
}

internal sealed record HealthStatus(string status);

[System.Text.Json.Serialization.JsonSerializable(typeof(HealthStatus))]
internal sealed partial class HealthJson : System.Text.Json.Serialization.JsonSerializerContext;
