using System.CommandLine;
using GptSharp.Generation;
using GptSharp.Serving;

namespace GptSharp.Cli.Commands;

/// <summary>
/// <c>gptsharp serve --model M [--port 8000 --host 127.0.0.1 --runs runs/ --api-key KEY]</c>: the OpenAI-compatible
/// API, the playground at <c>/</c> and the training dashboard at <c>/runs</c> (a thin shell over <see cref="GptServer"/>).
/// </summary>
internal static class ServeCommand
{
    public static Command Create()
    {
        var model = new ModelOptions();
        var port = new Option<int>("--port") { Description = "The port to listen on.", DefaultValueFactory = _ => 8000 };
        var host = new Option<string>("--host") { Description = "The address to bind (127.0.0.1: this machine only; 0.0.0.0: every interface).", DefaultValueFactory = _ => "127.0.0.1" };
        var runs = new Option<string?>("--runs") { Description = "A folder of training runs to show live at /runs." };
        var apiKey = new Option<string?>("--api-key") { Description = "Require the key on every request but /health (`Authorization: Bearer KEY`; pages and /runs/events: ?api_key=KEY once)." };
        var allowedHost = new Option<string[]>("--allowed-host") { Description = "Also answer to this Host name (besides localhost and the bind address; * = any). Repeatable." };
        var corsOrigin = new Option<string[]>("--cors-origin") { Description = "Let pages of this origin (https://app.example, or *) call the server. Repeatable." };
        var maxConnections = new Option<int>("--max-connections") { Description = "Most open connections.", DefaultValueFactory = _ => 1000 };
        var maxBatch = new Option<int>("--max-batch") { Description = "Most sequences decoded together per step.", DefaultValueFactory = _ => 8 };
        var maxQueue = new Option<int>("--max-queue") { Description = "Most sequences waiting for a slot; more are answered 429.", DefaultValueFactory = _ => 64 };
        var promptCache = new Option<int?>("--prompt-cache") { Description = "Positions of ended sequences' KV caches kept for prompts that begin with the same tokens (default: the context length; 0: off)." };
        var threads = new Option<int?>("--threads") { Description = "Worker threads (default: all cores)." };
        var command = new Command("serve", "Serve a model over an OpenAI-compatible HTTP API, with a playground (/) and a live training dashboard (/runs).");
        model.AddTo(command);
        foreach (var option in new Option[] { port, host, runs, apiKey, allowedHost, corsOrigin, maxConnections, maxBatch, maxQueue, promptCache, threads }) command.Options.Add(option);
        command.SetAction((parse, cancellation) => CliErrors.RunAsync(async () =>
        {
            GenerationSettings.SetThreads(parse.GetValue(threads));
            var options = new ServerOptions
            {
                Host = parse.GetValue(host) ?? "127.0.0.1",
                Port = parse.GetValue(port),
                RunsDirectory = parse.GetValue(runs),
                ApiKey = parse.GetValue(apiKey),
                AllowedHosts = parse.GetValue(allowedHost) ?? [],
                CorsOrigins = parse.GetValue(corsOrigin) ?? [],
                MaxConnections = parse.GetValue(maxConnections),
                LogRequests = true,
            };
            using var loaded = model.Load(parse);
            using var scheduler = new BatchScheduler(loaded, parse.GetValue(maxBatch), parse.GetValue(maxQueue), parse.GetValue(promptCache));
            await using var server = GptServer.Create(scheduler, options);
            await server.StartAsync(cancellation);
            Console.WriteLine($"Serving {loaded.Config.Layers}-layer model (context {loaded.Config.ContextLength}) at {server.Address}  " +
                $"(API: {server.Address}v1, playground: {server.Address}{(options.RunsDirectory is null ? "" : $", runs: {server.Address}runs")}); Ctrl+C stops.");
            await server.WaitForShutdownAsync(cancellation);
            return 0;
        }));
        return command;
    }
}
