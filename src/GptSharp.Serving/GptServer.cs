using System.Net;
using System.Reflection;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace GptSharp.Serving;

/// <summary>What <c>gptsharp serve</c> listens on and allows.</summary>
public sealed record ServerOptions
{
    /// <summary>The address to bind: loopback unless told otherwise, so a model is not exposed by accident.</summary>
    public string Host { get; init; } = "127.0.0.1";
    /// <summary>The port (0 = any free port; <see cref="GptServer.Address"/> tells which).</summary>
    public int Port { get; init; } = 8000;
    /// <summary>When set, every <c>/v1</c> request needs <c>Authorization: Bearer KEY</c>.</summary>
    public string? ApiKey { get; init; }
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

    private GptServer(WebApplication app) => _app = app;

    public static GptServer Create(BatchScheduler scheduler, ServerOptions options)
    {
        if (options.Port is < 0 or > 65535) throw new ArgumentException($"--port must be in 0..65535, got {options.Port}.");
        if (options.RunsDirectory is { } runs && !Directory.Exists(runs)) throw new ArgumentException($"--runs {runs}: no such directory.");
        if (options.ApiKey is "") throw new ArgumentException("--api-key is empty.");
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { ContentRootPath = AppContext.BaseDirectory });
        builder.Logging.ClearProviders();
        if (options.LogRequests) builder.Logging.AddSimpleConsole(o => o.SingleLine = true).SetMinimumLevel(LogLevel.Warning);
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            kestrel.Limits.MaxRequestBodySize = options.MaxRequestBodyBytes;
            kestrel.AddServerHeader = false;
            if (options.Host == "localhost") kestrel.ListenLocalhost(options.Port);
            else if (IPAddress.TryParse(options.Host, out var address)) kestrel.Listen(address, options.Port);
            else throw new ArgumentException($"--host must be an IP address or localhost, got \"{options.Host}\".");
        });
        var app = builder.Build();
        app.Use(async (context, next) =>
        {
            try
            {
                if (options.ApiKey is { } key && context.Request.Path.StartsWithSegments("/v1") &&
                    context.Request.Headers.Authorization.ToString() != "Bearer " + key)
                    throw new ApiException(401, "Incorrect API key provided: pass it as `Authorization: Bearer KEY` (the server's --api-key).", null, "invalid_api_key");
                await next(context);
            }
            catch (Exception e)
            {
                await WriteErrorAsync(context, e);
            }
        });
        // Statuses the routing answers itself (404, 405) get OpenAI's error body too.
        app.UseStatusCodePages(async status =>
        {
            var context = status.HttpContext;
            string message = context.Response.StatusCode switch
            {
                404 => $"Unknown path {context.Request.Method} {context.Request.Path}: see GET /v1/models, POST /v1/completions, POST /v1/chat/completions, / and /runs.",
                405 => $"{context.Request.Method} is not allowed on {context.Request.Path}.",
                _ => $"HTTP {context.Response.StatusCode}.",
            };
            await ApiException.WriteAsync(context, context.Response.StatusCode, message);
        });
        new OpenAiApi(scheduler, options.ModelId).Map(app);
        new RunsDashboard(options.RunsDirectory, options.RunsPollInterval).Map(app);
        app.MapGet("/", context => WritePageAsync(context, "index.html"));
        app.MapGet("/runs", context => WritePageAsync(context, "runs.html"));
        return new GptServer(app);
    }

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
    private static async Task WriteErrorAsync(HttpContext context, Exception e)
    {
        if (context.RequestAborted.IsCancellationRequested) return;
        var (status, message, param, code) = e switch
        {
            ApiException api => (api.Status, api.Message, (string?)api.Param, (string?)api.Code),
            BadHttpRequestException bad => (bad.StatusCode, bad.StatusCode == 413
                ? "The request body is larger than the server accepts." : $"Bad request: {bad.Message}", (string?)null, bad.StatusCode == 413 ? "request_too_large" : (string?)null),
            QueueFullException full => (429, full.Message, (string?)null, (string?)"queue_full"),
            ArgumentException bad => (400, bad.Message, (string?)null, (string?)"invalid_value"),
            _ => (500, "The server failed: " + e.Message, (string?)null, (string?)null),
        };
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
