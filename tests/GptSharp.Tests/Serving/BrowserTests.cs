using GptSharp.Serving;
using PuppeteerSharp;

namespace GptSharp.Tests.Serving;

/// <summary>
/// The pages in real headless Chromium (the system's <c>chromium</c>; nothing is downloaded). Set
/// GPTSHARP_SCREENSHOTS=DIR to keep screenshots of the pages.
/// </summary>
[Collection(ServingCollection.Name)]
public class BrowserTests(ServingFixture server)
{
    private static async Task<IBrowser> LaunchAsync()
    {
        string chromium = SystemTools.SkipUnlessInstalled("chromium", SystemTools.ChromiumInstall);
        return await Puppeteer.LaunchAsync(new LaunchOptions
        {
            Headless = true,
            ExecutablePath = chromium,
            Args = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
            Timeout = 60_000,
        });
    }

    private static async Task ScreenshotAsync(IPage page, string name)
    {
        if (Environment.GetEnvironmentVariable("GPTSHARP_SCREENSHOTS") is { Length: > 0 } folder)
        {
            Directory.CreateDirectory(folder);
            await page.ScreenshotAsync(Path.Combine(folder, name), new ScreenshotOptions { FullPage = true });
        }
    }

    [SkippableFact]
    public async Task PlaygroundStreamsTheCompletionOfATypedPrompt()
    {
        await using var browser = await LaunchAsync();
        await using var page = await browser.NewPageAsync();
        await page.SetViewportAsync(new ViewPortOptions { Width = 1280, Height = 800 });
        await page.GoToAsync(server.Server.Address.ToString(), WaitUntilNavigation.Networkidle0);
        await page.WaitForFunctionAsync("() => document.getElementById('model').textContent.includes('context 64')");
        await page.EvaluateExpressionAsync("document.getElementById('prompt').value = ''");
        await page.TypeAsync("#prompt", "Every effort moves you");
        // A slider moved the way a user drags it: value set, input event fired.
        await page.EvaluateExpressionAsync("(() => { const s = document.getElementById('max-tokens'); s.value = 30; s.dispatchEvent(new Event('input')); })()");
        // Count the DOM updates of the output, to see the text arrive in pieces rather than at once.
        await page.EvaluateExpressionAsync("window.updates = 0; new MutationObserver(() => window.updates++).observe(document.getElementById('completion'), { childList: true, characterData: true, subtree: true })");
        await page.ClickAsync("#generate");
        await page.WaitForFunctionAsync("() => !document.getElementById('generate').disabled && document.getElementById('stats').textContent.includes('tokens/s') && !document.getElementById('stats').textContent.includes('…')",
            new WaitForFunctionOptions { Timeout = 30_000 });
        string completion = await page.EvaluateExpressionAsync<string>("document.getElementById('completion').textContent");
        int updates = await page.EvaluateExpressionAsync<int>("window.updates");
        string expected = server.ReferenceText("Every effort moves you", new CompletionSettings { MaxTokens = 30, Temperature = 1f, TopK = 40, TopP = 1f }, 123);
        Assert.Equal(expected, completion);
        // On a quiet machine the tiny model is fast enough for the browser to coalesce pieces into a few frames.
        Assert.True(updates > 1, $"the output changed only {updates} times: it was not streamed");
        Assert.Equal("", await page.EvaluateExpressionAsync<string>("document.getElementById('error').textContent"));
        Assert.True(await page.EvaluateExpressionAsync<int>("document.querySelectorAll('#top5 .bar').length") > 0, "no next-token probabilities shown");
        await ScreenshotAsync(page, "playground.png");
    }

    [SkippableFact]
    public async Task RunsDashboardChartsGrowAsMetricsAreWritten()
    {
        string runs = Path.Combine(Path.GetTempPath(), $"gptsharp-runs-{Guid.NewGuid():N}");
        string run = Path.Combine(runs, "run-a");
        Directory.CreateDirectory(run);
        try
        {
            File.WriteAllText(Path.Combine(run, "config.json"), "{\"model\": {\"layers\": 2}, \"training\": {\"epochs\": 10}}");
            File.WriteAllText(Path.Combine(run, "report.html"), "<p>in progress — epoch 1 of 10</p>");
            File.WriteAllText(Path.Combine(run, "samples.txt"), "Ep 1 (Step 000005): Every effort moves you the the the\n");
            string csv = Path.Combine(run, "metrics.csv");
            File.WriteAllText(csv, "step,epoch,tokens_seen,train_loss,val_loss,lr,tokens_per_s\n0,1,512,10.9,10.95,0.0004,1000.0\n5,1,3072,9.7,9.9,0.0004,1200.0\n");
            await using var dashboard = GptServer.Create(server.Scheduler, new ServerOptions { Port = 0, RunsDirectory = runs, RunsPollInterval = TimeSpan.FromMilliseconds(150) });
            await dashboard.StartAsync();

            await using var browser = await LaunchAsync();
            await using var page = await browser.NewPageAsync();
            await page.SetViewportAsync(new ViewPortOptions { Width = 1280, Height = 900 });
            await page.GoToAsync(new Uri(dashboard.Address, "runs").ToString());
            const string points = "document.querySelector('[data-run=\"run-a\"] canvas.loss').dataset.points";
            await page.WaitForFunctionAsync($"() => document.querySelector('[data-run=\"run-a\"]') && {points} === '2'");
            string pageUrl = page.Url;

            // The trainer evaluates again: rows are appended (the last one arrives in two writes).
            File.AppendAllText(csv, "10,2,5632,8.1,8.6,0.0004,1250.0\n15,2,8192,7.2,8.0,0.0004,1300.0\n20,3,107");
            await page.WaitForFunctionAsync($"() => {points} === '4'");
            File.AppendAllText(csv, "52,6.6,7.7,0.0004,1310.0\n");
            File.WriteAllText(Path.Combine(run, "report.html"), "<p>completed — epoch 3 of 3</p>");
            await page.WaitForFunctionAsync($"() => {points} === '5' && document.querySelector('[data-run=\"run-a\"]').dataset.state === 'finished'");
            Assert.Equal(pageUrl, page.Url); // no reload: pushed over SSE
            Assert.Equal("5", await page.EvaluateExpressionAsync<string>("document.querySelector('[data-run=\"run-a\"] canvas.perplexity').dataset.points"));
            Assert.Contains("Every effort moves you", await page.EvaluateExpressionAsync<string>("document.querySelector('[data-run=\"run-a\"] .samples').textContent"));
            Assert.Contains("\"layers\": 2", await page.EvaluateExpressionAsync<string>("document.querySelector('[data-run=\"run-a\"] .config').textContent"));
            await ScreenshotAsync(page, "runs.png");
        }
        finally
        {
            Directory.Delete(runs, recursive: true);
        }
    }

    [SkippableFact]
    public async Task RunsDashboardOverlaysRunsOnLogAxesWithValuesOnHover()
    {
        string runs = Path.Combine(Path.GetTempPath(), $"gptsharp-runs-{Guid.NewGuid():N}");
        try
        {
            // Two runs: one with a benchmark scored at some evaluations (empty cells elsewhere), one without.
            foreach (var (name, extra) in new[] { ("run-a", true), ("run-b", false) })
            {
                string run = Path.Combine(runs, name);
                Directory.CreateDirectory(run);
                File.WriteAllText(Path.Combine(run, "config.json"), "{\"model\": {\"layers\": 2}}");
                File.WriteAllText(Path.Combine(run, "report.html"), "<p>completed — epoch 3 of 3</p>");
                File.WriteAllText(Path.Combine(run, "metrics.csv"), extra
                    ? "step,epoch,tokens_seen,train_loss,val_loss,lr,tokens_per_s,hellaswag_acc,hellaswag_acc_norm\n" +
                      "0,1,512,9.98,9.99,4e-05,1000.0,0.25,0.25\n5,1,3072,6.5,6.9,0.0004,1200.0,,\n10,2,5632,4.1,5.2,0.0002,1250.0,0.3,0.35\n"
                    : "step,epoch,tokens_seen,train_loss,val_loss,lr,tokens_per_s\n0,1,512,10.9,10.95,0.0004,1000.0\n5,1,3072,7.7,7.9,0.0004,1200.0\n");
            }
            await using var dashboard = GptServer.Create(server.Scheduler, new ServerOptions { Port = 0, RunsDirectory = runs, RunsPollInterval = TimeSpan.FromMilliseconds(150) });
            await dashboard.StartAsync();

            await using var browser = await LaunchAsync();
            await using var page = await browser.NewPageAsync();
            await page.SetViewportAsync(new ViewPortOptions { Width = 1280, Height = 2000 });
            var pageErrors = new List<string>();
            page.PageError += (_, e) => pageErrors.Add(e.Message);
            await page.GoToAsync(new Uri(dashboard.Address, "runs").ToString());
            const string runA = "document.querySelector('[data-run=\"run-a\"]')";
            await page.WaitForFunctionAsync($"() => {runA} && document.querySelector('[data-run=\"run-b\"]') && {runA}.querySelector('canvas.task').dataset.points === '2'");

            // Perplexity on a log axis (exp(9.99) ~ 21,800 no longer flattens the rest), the learning rate, the benchmark
            // (2 of 3 evaluations scored: the empty cells are gaps, not zeros).
            Assert.Equal("true", await page.EvaluateExpressionAsync<string>($"{runA}.querySelector('canvas.perplexity').dataset.log"));
            Assert.Equal("false", await page.EvaluateExpressionAsync<string>($"{runA}.querySelector('canvas.loss').dataset.log"));
            Assert.Equal("3", await page.EvaluateExpressionAsync<string>($"{runA}.querySelector('canvas.lr').dataset.points"));
            Assert.Equal("2", await page.EvaluateExpressionAsync<string>($"{runA}.querySelector('canvas.task').dataset.series"));
            Assert.Contains("hellaswag_acc_norm 35.0 %", await page.EvaluateExpressionAsync<string>($"{runA}.querySelector('.summary').textContent"));
            Assert.Equal("none", await page.EvaluateExpressionAsync<string>("document.querySelector('[data-run=\"run-b\"] canvas.task').style.display"));

            // Both runs on the comparison charts; unticking one takes it off.
            Assert.Equal("2", await page.EvaluateExpressionAsync<string>("document.querySelector('#compare .compare-loss').dataset.series"));
            Assert.Equal("true", await page.EvaluateExpressionAsync<string>("document.querySelector('#compare .compare-perplexity').dataset.log"));
            Assert.Equal("1", await page.EvaluateExpressionAsync<string>("document.querySelector('#compare .compare-task').dataset.series"));
            await page.ClickAsync("#compare input[data-toggle=\"run-b\"]");
            Assert.Equal("1", await page.EvaluateExpressionAsync<string>("document.querySelector('#compare .compare-loss').dataset.series"));
            await page.ClickAsync("#compare input[data-toggle=\"run-b\"]");

            // Hover over run-a's loss chart at its last point (x = 5632 tokens, the right end): the values show.
            var box = await (await page.QuerySelectorAsync("[data-run=\"run-a\"] canvas.loss")).BoundingBoxAsync();
            await page.Mouse.MoveAsync(box.X + box.Width - 30, box.Y + box.Height / 2);
            await page.WaitForFunctionAsync("() => document.getElementById('tooltip').style.display === 'block'");
            string tip = await page.EvaluateExpressionAsync<string>("document.getElementById('tooltip').textContent");
            Assert.Contains("tokens seen 5,632", tip);
            Assert.Contains("training: 4.10", tip);
            Assert.Contains("validation: 5.20", tip);
            Assert.Empty(pageErrors);
            await ScreenshotAsync(page, "runs-compare.png");
        }
        finally
        {
            Directory.Delete(runs, recursive: true);
        }
    }
}
